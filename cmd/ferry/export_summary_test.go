package main

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferry-airgap/ferry/bundle"
	"github.com/ferry-airgap/ferry/export"
)

// TestExportBadSourceDateEpoch: an invalid SOURCE_DATE_EPOCH is bad input,
// exit 2 with kind "input", found before the library (and so any request)
// is called; it used to fail with exit 1 after every mapping was resolved.
func TestExportBadSourceDateEpoch(t *testing.T) {
	m := writeTemp(t, "m.yaml", mappingYAML)
	out := filepath.Join(t.TempDir(), "b.tar")
	for _, v := range []string{"yesterday", "-5", "1e9"} {
		t.Setenv(bundle.SourceDateEpochEnv, v)
		res := runCLI(t, context.Background(), neverCalled(t), "", "export", "--json", "-f", m, "-o", out)
		var got struct {
			Error struct {
				Kind     string `json:"kind"`
				ExitCode int    `json:"exitCode"`
				Message  string `json:"message"`
			} `json:"error"`
		}
		if err := json.Unmarshal([]byte(res.stdout), &got); err != nil {
			t.Fatalf("SOURCE_DATE_EPOCH=%s: stdout is not JSON: %v\n%s", v, err, res.stdout)
		}
		if res.code != 2 || got.Error.ExitCode != 2 || got.Error.Kind != "input" || !strings.Contains(got.Error.Message, "SOURCE_DATE_EPOCH") {
			t.Errorf("SOURCE_DATE_EPOCH=%s: exit %d, error %+v; want exit 2, kind input, naming the variable", v, res.code, got.Error)
		}
	}
}

// TestExportSummaryLeftOut: blobs an export leaves out because --have
// says the target holds them (or a --since base carried them) are named as
// such, and not counted as saved by deduplication.
func TestExportSummaryLeftOut(t *testing.T) {
	s := &export.Summary{Output: "b.tar", SHA256: "abc", Images: []export.ImageSummary{{Source: "r/a:1", Target: "a", Tags: []string{"1"}, Size: 3000}},
		Tags: 1, Blobs: 2, Bytes: 1000, Logical: 3500, BaseBlobs: 3, BaseBytes: 2000,
		Have: []bundle.HaveRef{{ID: "inv1", Registry: "harbor.internal", Created: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}}}
	var b strings.Builder
	printExportSummary(&b, s)
	for _, want := range []string{"(saved 500 B by deduplication)", "left out 3 blobs (2.0 KiB): the inventories say the target has them"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, b.String())
		}
	}
	b.Reset()
	s.DryRun = true
	printExportSummary(&b, s)
	if !strings.Contains(b.String(), "1000 B (1.5 KiB before deduplication)") || !strings.Contains(b.String(), "left out 3 blobs (2.0 KiB)") {
		t.Errorf("--have --dry-run summary:\n%s", b.String())
	}
	b.Reset()
	s.DryRun = false
	s.Have, s.Base = nil, "prev-id"
	printExportSummary(&b, s)
	if !strings.Contains(b.String(), "(saved 500 B by deduplication)") || !strings.Contains(b.String(), "delta of bundle prev-id: 3 blobs (2.0 KiB) left to it") {
		t.Errorf("--since summary:\n%s", b.String())
	}
}

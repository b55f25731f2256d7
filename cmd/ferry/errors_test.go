package main

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"syscall"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/ferry-airgap/ferry/internal/registry"
)

// TestDescribeErrorTypedBlob: a blob error names its blob and registry in
// the --json error object from its type, not from the message text; the
// first digest of the text would be the image's here.
func TestDescribeErrorTypedBlob(t *testing.T) {
	img := v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("1", 64)}
	blob := v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("a", 64)}
	err := fmt.Errorf("image src.example/app@%s: %w", img,
		&registry.BlobError{Registry: "src.example", Digest: blob, Received: 10, Err: registry.ErrBlobMismatch})
	je := describeError(err)
	if je.Blob != blob.String() {
		t.Errorf("blob = %q, want %q", je.Blob, blob)
	}
	if je.Registry != "src.example" {
		t.Errorf("registry = %q, want src.example", je.Registry)
	}
	if je.ExitCode != exitFailed || je.Message != err.Error() {
		t.Errorf("exit %d, message %q", je.ExitCode, je.Message)
	}
}

// failedRun is an error that stands for its parts' failures (causer), as
// a sync whose tasks failed is.
type failedRun []error

func (f failedRun) Error() string   { return "sync failed: 1 of 1 tasks failed" }
func (f failedRun) Causes() []error { return f }

// TestRunFailedByItsPartsTakesTheirKind: a run that failed because every
// image failed to reach a registry that refuses connections is of kind
// network and names the registry; mixed causes stay failed.
func TestRunFailedByItsPartsTakesTheirKind(t *testing.T) {
	refused := func(host string) error {
		return fmt.Errorf("connecting to %s for a/b: %w", host, registry.Explain(&url.Error{Op: "Get", URL: "https://" + host + "/v2/",
			Err: &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}}))
	}
	for _, tc := range []struct {
		err      error
		kind     string
		registry string
	}{
		{failedRun{refused("r.example:5000"), refused("r.example:5000")}, "network", "r.example:5000"},
		{failedRun{failedRun{refused("r.example:5000")}}, "network", "r.example:5000"},
		{failedRun{refused("a.example"), refused("b.example")}, "network", ""},
		{failedRun{refused("r.example:5000"), errors.New("manifest unknown")}, "failed", ""},
		{failedRun{refused("r.example:5000"), fmt.Errorf("x: %w", registry.ErrUnauthorized)}, "failed", ""},
		{failedRun{}, "failed", ""},
	} {
		je := describeError(tc.err)
		if je.Kind != tc.kind || je.Registry != tc.registry || je.ExitCode != exitFailed {
			t.Errorf("%v: kind %s, registry %q, exit %d; want %s, %q, 1", []error(tc.err.(failedRun)), je.Kind, je.Registry, je.ExitCode, tc.kind, tc.registry)
		}
	}
}

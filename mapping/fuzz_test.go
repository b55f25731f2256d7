package mapping_test

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/ferry-airgap/ferry/mapping"
)

// FuzzLoad checks that no input makes Parse panic or hang, that every error
// wraps ErrInvalid, and that what loads satisfies the documented invariants.
// Seeds: testdata/fuzz/FuzzLoad plus the first task of a published example.
//
// The seeds stay small (a few hundred bytes): the fuzzer minimizes every
// new interesting input for up to a minute and reports no executions
// meanwhile, and minimizing a whole 5 KB example file takes all of it.
func FuzzLoad(f *testing.F) {
	data, err := os.ReadFile(coreExample)
	if err != nil {
		f.Fatal(err)
	}
	first, _, _ := strings.Cut(string(data), "      - from: spaceone/docs")
	f.Add([]byte(first))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := mapping.Parse("fuzz.yaml", data)
		if err != nil {
			if !errors.Is(err, mapping.ErrInvalid) {
				t.Fatalf("error does not wrap ErrInvalid: %v", err)
			}
			if !strings.HasPrefix(err.Error(), "fuzz.yaml") {
				t.Fatalf("error does not name the file: %v", err)
			}
			return
		}
		names := map[string]bool{}
		for _, task := range cfg.Tasks {
			if task.Name == "" || names[task.Name] {
				t.Fatalf("empty or duplicate task name %q", task.Name)
			}
			names[task.Name] = true
			if task.File != "fuzz.yaml" || task.Line < 1 {
				t.Fatalf("task %q at %s:%d", task.Name, task.File, task.Line)
			}
			if task.Interval < 0 || (task.Interval > 0 && task.Interval.Seconds() < 30) {
				t.Fatalf("task %q interval %v", task.Name, task.Interval)
			}
			if !task.Source.HasPlaceholder("registry") {
				if err := task.CheckSource(); err != nil {
					t.Fatalf("task %q loaded with an unusable source: %v", task.Name, err)
				}
			}
			for _, m := range task.Mappings {
				if m.From == "" || m.To == "" || m.Line < 1 {
					t.Fatalf("task %q mapping %+v", task.Name, *m)
				}
				if !task.Source.HasPlaceholder("registry") {
					if _, err := task.SourceRepository(m); err != nil && !strings.Contains(err.Error(), "longer than") {
						t.Fatalf("loaded mapping does not form a repository: %v", err)
					}
				}
			}
			if a := task.Source.Auth; a != nil && a.Password != "" {
				if got, want := a.String(), fmt.Sprintf("user %q, password REDACTED", a.Username); got != want {
					t.Fatalf("Auth.String() = %q, want %q", got, want)
				}
			}
		}
		for _, c := range cfg.Charts {
			for _, p := range c.Exclude {
				if p == nil || strings.TrimSpace(p.String()) == "" {
					t.Fatalf("chart %q loaded an empty exclude pattern", c.Name)
				}
			}
			for _, ref := range c.ExtraImages {
				if names := mapping.ImageNames(ref); names[0] == ref {
					t.Fatalf("chart %q loaded extra image %q without tag or digest", c.Name, ref)
				}
			}
		}
		_ = cfg.Warnings()
	})
}

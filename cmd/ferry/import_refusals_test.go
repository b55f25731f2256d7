package main

import (
	"fmt"
	"strings"
	"testing"

	"github.com/ferry-airgap/ferry/internal/registry"
	"github.com/ferry-airgap/ferry/push"
	"github.com/ferry-airgap/ferry/replicate"
)

// A Harbor refusal is one line, not one per image; when it is the run's
// error it is not printed twice; its --json kind and hint come from it.
func TestImportFailuresSayRefusalsOnce(t *testing.T) {
	r := &push.RefusalError{Kind: push.RefusedProxyCache, Registry: "harbor.test", Project: "cache",
		Images: []string{"cache/a:1", "cache/b:1"}}
	sum := &push.Summary{
		Failures: []push.Failure{
			{Image: "cache/a:1", Error: r.Error(), Refusal: push.RefusedProxyCache},
			{Image: "cache/b:1", Error: r.Error(), Refusal: push.RefusedProxyCache},
			{Image: "other/c:1", Error: "blob sha256:…: 500 Internal Server Error"},
		},
		Refusals: []push.Refusal{{Kind: push.RefusedProxyCache, Project: "cache", Message: r.Error(), Hint: r.Hint(), Images: r.Images}},
	}
	mixed := importFailures(sum, fmt.Errorf("%w: 3 of 3 images failed", push.ErrFailed))
	if len(mixed) != 2 || !strings.HasPrefix(mixed[0], "other/c:1: ") || !strings.Contains(mixed[1], `Harbor project "cache"`) || !strings.Contains(mixed[1], "hint: ") {
		t.Errorf("lines with another failure: %q", mixed)
	}
	sum.Failures = sum.Failures[:2]
	alone := importFailures(sum, fmt.Errorf("%w: %w", push.ErrFailed, r))
	if len(alone) != 0 {
		t.Errorf("the refusal that is the run's error is printed again: %q", alone)
	}
	je := describeError(fmt.Errorf("%w: %w", push.ErrFailed, r))
	if je.Kind != "proxy-cache" || je.Registry != "harbor.test" || !strings.Contains(je.Hint, "normal project") || je.ExitCode != 1 {
		t.Errorf("json error %+v", je)
	}
}

// A sync round says a Harbor refusal once, as import does.
func TestSyncFailuresSayRefusalsOnce(t *testing.T) {
	r := replicate.Round{
		Failures: []replicate.Failure{
			{Image: "cache/a:1", Error: "refused", Refusal: push.RefusedProxyCache},
			{Image: "cache/b:1", Error: "refused", Refusal: push.RefusedProxyCache},
			{Image: "other/c:1", Error: "500 Internal Server Error"},
		},
		Refusals: []push.Refusal{{Kind: push.RefusedProxyCache, Project: "cache", Message: `Harbor project "cache" on h is a proxy-cache project`, Hint: "push to a normal project", Images: []string{"cache/a:1", "cache/b:1"}}},
	}
	lines := roundFailures(r)
	if len(lines) != 2 || lines[0] != "other/c:1: 500 Internal Server Error" || !strings.Contains(lines[1], `Harbor project "cache"`) || !strings.Contains(lines[1], "hint: push to a normal project") {
		t.Errorf("round failure lines: %q", lines)
	}
}

// A missing Harbor project is of one kind however it was found: through
// the API (no registry error) or by Harbor's 403 at push time.
func TestMissingProjectKind(t *testing.T) {
	for _, err := range []error{
		&push.HarborProjectError{Registry: "harbor.test", Project: "p"},
		&push.HarborProjectError{Registry: "harbor.test", Project: "p", Err: fmt.Errorf("pushing: %w", registry.ErrDenied)},
	} {
		je := describeError(fmt.Errorf("%w: %w", push.ErrFailed, err))
		if je.Kind != "failed" || je.Hint != "" || !strings.Contains(je.Message, "--create-projects") {
			t.Errorf("%v: json error %+v, want kind failed, no credentials hint", err, je)
		}
	}
}

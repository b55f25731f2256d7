package causes

import (
	"errors"
	"testing"
)

func TestError(t *testing.T) {
	sentinel := errors.New("sync failed")
	a, b := errors.New("a"), errors.New("b")
	err := error(New(sentinel, "sync failed: 2 of 2 tasks failed", []error{a, b}))
	if !errors.Is(err, sentinel) || errors.Is(err, a) {
		t.Errorf("errors.Is: sentinel %v, cause %v; want the sentinel only", errors.Is(err, sentinel), errors.Is(err, a))
	}
	var c interface{ Causes() []error }
	if !errors.As(err, &c) || len(c.Causes()) != 2 || c.Causes()[1] != b {
		t.Errorf("causes: %v", c)
	}
	if err.Error() != "sync failed: 2 of 2 tasks failed" {
		t.Errorf("message %q", err.Error())
	}
}

package harness

import (
	"os"
	"os/exec"
	"sync"
	"syscall"
	"testing"
	"time"
)

// sharedServer is a server that serves the whole test binary (a real
// Harbor, a SeaweedFS): started on first use, stopped from TestMain.
// A failed start is remembered, so that every test that needs the server
// fails with the same reason instead of trying again.
type sharedServer[T any] struct {
	mu  sync.Mutex
	v   *T
	err error
}

// get returns the server, starting it with start on first use; the test
// is skipped when the environment variable skip is 1, and fails when the
// server cannot be started.
func (s *sharedServer[T]) get(t testing.TB, name, skip string, start func() (*T, error)) *T {
	t.Helper()
	if os.Getenv(skip) == "1" {
		t.Skipf("%s=1: the tests that need %s are skipped on request", skip, name)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.v == nil && s.err == nil {
		s.v, s.err = start()
	}
	if s.err != nil {
		t.Fatalf("starting %s: %v", name, s.err)
	}
	return s.v
}

// take returns the running server, if any, and forgets it: the caller
// stops it.
func (s *sharedServer[T]) take() *T {
	s.mu.Lock()
	defer s.mu.Unlock()
	v := s.v
	s.v = nil
	return v
}

// terminate stops a started server process: SIGTERM, then SIGKILL when it
// has not exited after grace; it returns once the process was waited for.
func terminate(cmd *exec.Cmd, grace time.Duration) {
	if cmd.Process == nil || cmd.ProcessState != nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(grace):
		_ = cmd.Process.Kill()
		<-done
	}
}

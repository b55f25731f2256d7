// Command ferry carries container images across an air gap: export
// resolves mapping files into one bundle file, import pushes a bundle into
// a registry, verify and inspect check and describe a bundle.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/ferry-airgap/ferry/bundle"
	"github.com/ferry-airgap/ferry/filter"
	"github.com/ferry-airgap/ferry/internal/registry"
	"github.com/ferry-airgap/ferry/inventory"
	"github.com/ferry-airgap/ferry/mapping"
	"github.com/ferry-airgap/ferry/push"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// Exit codes, as design.md promises.
const (
	exitOK      = 0
	exitFailed  = 1
	exitBadUsge = 2
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	root := newRootCmd(&env{stdin: stdin, stdout: stdout, stderr: stderr})
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	if s := exitStatus(0); errors.As(err, &s) { // ferry diff --exit-code: nothing to print
		return int(s)
	}
	code := exitCode(err)
	fmt.Fprintf(stderr, "error: %v\n", err)
	if h := hint(err); h != "" && !strings.Contains(err.Error(), "hint:") {
		fmt.Fprintf(stderr, "hint: %s\n", h)
	}
	return code
}

// usageError marks bad flags or arguments (exit 2).
type usageError struct{ err error }

func (u usageError) Error() string { return u.err.Error() }
func (u usageError) Unwrap() error { return u.err }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

func exitCode(err error) int {
	var ue usageError
	switch {
	case errors.As(err, &ue),
		errors.Is(err, mapping.ErrInvalid),
		errors.Is(err, filter.ErrSyntax),
		errors.Is(err, registry.ErrConfig),
		errors.Is(err, inventory.ErrInvalid),
		errors.Is(err, push.ErrHaveTarget):
		return exitBadUsge
	}
	return exitFailed
}

func hint(err error) string {
	switch {
	case errors.Is(err, registry.ErrUnauthorized):
		return "check the username and password; pass a password with --password-stdin (single-quote robot$ names in a shell)"
	case errors.Is(err, registry.ErrTLS):
		return "trust the registry's CA with --ca-cert FILE or --certs-dir DIR, or (for tests only) --insecure-skip-tls-verify"
	case errors.Is(err, bundle.ErrCorrupt):
		return "the bundle is damaged: compare it with its .sha256 file (sha256sum -c) and copy it again"
	case errors.Is(err, context.Canceled):
		return "interrupted; nothing was left half-written"
	}
	return ""
}

// Command ferry carries container images across an air gap: export
// resolves mapping files into one bundle file, import pushes a bundle into
// a registry, verify and inspect check and describe a bundle.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
)

// Exit codes, as design.md promises: 0 success, 1 the operation failed,
// 2 bad usage or bad input (nothing ran), 128+N killed by signal N.
const (
	exitOK       = 0
	exitFailed   = 1
	exitBadUsage = 2
)

func main() {
	ctx, cancel := context.WithCancelCause(context.Background())
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		// The first signal cancels: transfers stop, temporary files are
		// removed, the command returns. Later ones are swallowed here (sync
		// listens for a second one itself) so that cleanup can finish.
		s := <-sigs
		cancel(interrupted{s.(syscall.Signal)})
	}()
	os.Exit(run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// interrupted is the cancellation cause when a signal stops ferry.
type interrupted struct{ sig syscall.Signal }

func (i interrupted) Error() string {
	name := "SIGINT"
	if i.sig == syscall.SIGTERM {
		name = "SIGTERM"
	}
	return "interrupted by " + name
}

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	e := &env{stdin: stdin, stdout: stdout, stderr: stderr}
	return execute(ctx, e, newRootCmd(e, runners{}), args)
}

// execute runs root with args and turns the outcome into an exit code,
// printing the error on stderr and, with --json, as an error object on
// stdout (unless the command already put it into its own JSON output).
func execute(ctx context.Context, e *env, root *cobra.Command, args []string) int {
	root.SetArgs(args)
	root.SetIn(e.stdin)
	root.SetOut(e.stdout)
	root.SetErr(e.stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	if s := exitStatus(0); errors.As(err, &s) { // ferry diff --exit-code: nothing to print
		return int(s)
	}
	if cause, ok := context.Cause(ctx).(interrupted); ok {
		// However the command reported it, the cause is the signal.
		fmt.Fprintf(e.stderr, "ferry: %v; nothing was left half-written\n", cause)
		if e.json && !e.jsonDone {
			writeErrorJSON(e, cause)
		}
		return 128 + int(cause.sig)
	}
	err = cobraUsage(err)
	fmt.Fprintf(e.stderr, "error: %v\n", err)
	if h := hint(err); h != "" && !strings.Contains(err.Error(), "hint:") {
		fmt.Fprintf(e.stderr, "hint: %s\n", h)
	}
	if e.json && !e.jsonDone {
		writeErrorJSON(e, err)
	}
	return exitCode(err)
}

// writeErrorJSON writes {"error": {...}} on stdout: a JSON result for a
// command that failed before it had any other.
func writeErrorJSON(e *env, err error) {
	v := map[string]any{"error": describeError(err)}
	if e.jsonLines {
		b, _ := json.Marshal(v)
		fmt.Fprintf(e.stdout, "%s\n", b)
		return
	}
	_ = writeJSON(e.stdout, v)
}

// cobraUsage marks cobra's own argument errors (an unknown command, a
// wrong number of arguments) as usage errors. Cobra gives them no type;
// its messages are stable.
func cobraUsage(err error) error {
	msg := err.Error()
	for _, p := range []string{"unknown command ", "accepts ", "requires at least ", "requires at most ", "unknown flag", "unknown shorthand flag"} {
		if strings.HasPrefix(msg, p) {
			return usageError{err}
		}
	}
	return err
}

// usageError marks bad flags, arguments or input files (exit 2): something
// the user can fix before anything runs.
type usageError struct{ err error }

func (u usageError) Error() string { return u.err.Error() }
func (u usageError) Unwrap() error { return u.err }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

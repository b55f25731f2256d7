package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/ferry-airgap/ferry/internal/units"
	"github.com/ferry-airgap/ferry/replicate"
)

type syncFlags struct {
	regFlags
	files       []string
	tasks       []string
	to          string
	watch       bool
	dryRun      bool
	platform    string
	mirrors     []string
	metricsAddr string
}

func newSyncCmd(e *env, runF func(context.Context, replicate.Options, *replicate.WatchOptions) error) *cobra.Command {
	if runF == nil {
		runF = runReplicate
	}
	var f syncFlags
	cmd := &cobra.Command{
		Use:   "sync -f MAPPINGS.yaml [-f MORE.yaml] [--to REGISTRY[/PREFIX]] [--watch]",
		Short: "Copy images from registry to registry, dregsy-style, without wasted pulls",
		Long: `Copy the images the mapping files select from each task's source registry to
its target registry (or --to), through the same pipeline as 'ferry import':
blobs first, then manifests, tags last; blobs the target has are skipped,
blobs another repository of the target has are mounted.

Before any GET, each tag's digest at the source (HEAD) is compared with the
target's (HEAD): an image that did not change costs two HEADs, no manifest
GET (what Docker Hub counts as a pull) and no blob download.

Without --watch every task runs once. With --watch each task runs every
'interval' seconds of its task (tasks without interval run once); the files
are read again on SIGHUP or when they change; a failed round is retried at
the next interval; Ctrl-C or SIGTERM stops cleanly.

One summary line per task round goes to stdout (--json: one JSON object per
line). Source credentials: --username with --password-stdin or
$FERRY_PASSWORD, the task's source auth, --auth-file, the docker keychain.
Target credentials: the task's target auth, --auth-file, the docker keychain.

Exit status as for every command; with --watch, a signal is how the watch
ends: SIGINT or SIGTERM stop it with status 0.`,
		Example: `  # what would be copied, copying nothing
  ferry sync -f images.yaml --dry-run

  # copy every task once, into one registry whatever the tasks' targets
  ferry sync -f images.yaml --to harbor.internal/mirror

  # keep running: each task at its interval, metrics for Prometheus
  ferry sync -f images.yaml --watch --metrics-addr 127.0.0.1:9410`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runSync(cmd.Context(), e, &f, runF)
		},
	}
	fl := cmd.Flags()
	fl.StringArrayVarP(&f.files, "file", "f", nil, "mapping file in dregsy format (repeatable; merged)")
	fl.StringArrayVar(&f.tasks, "task", nil, "sync only this task (repeatable)")
	fl.StringVar(&f.to, "to", "", "target REGISTRY[/PREFIX] for every task (default: each task's target.registry)")
	fl.BoolVar(&f.watch, "watch", false, "keep running: each task at its interval, reloading the files when they change or on SIGHUP")
	fl.BoolVar(&e.json, "json", false, "print one JSON line per task round on stdout (and a last {\"error\": ...} line on failure)")
	fl.BoolVar(&f.dryRun, "dry-run", false, "compare source and target and report what would be copied; copy nothing")
	fl.StringVar(&f.platform, "platform", "", "platforms to keep: os/arch[/variant][,...] or all (default: each mapping's platform, else all)")
	fl.StringArrayVar(&f.mirrors, "mirror", nil, "fetch images of SOURCE from MIRROR: SOURCE=MIRROR (repeatable)")
	fl.StringVar(&f.metricsAddr, "metrics-addr", "", "serve Prometheus metrics on this address, e.g. 127.0.0.1:9410 (path /metrics)")
	f.regFlags.register(cmd)
	return cmd
}

// runReplicate is the library call: one run, or a watch.
func runReplicate(ctx context.Context, o replicate.Options, wo *replicate.WatchOptions) error {
	if wo == nil {
		_, err := replicate.Run(ctx, o)
		return err
	}
	return replicate.Watch(ctx, o, *wo)
}

func runSync(ctx context.Context, e *env, f *syncFlags, runF func(context.Context, replicate.Options, *replicate.WatchOptions) error) error {
	e.jsonLines = true
	o, cleanup, err := syncOptions(e, f)
	defer cleanup()
	if err != nil {
		return err
	}
	metrics := replicate.NewMetrics()
	if f.metricsAddr != "" {
		stop, err := serveMetrics(ctx, e, f.metricsAddr, metrics)
		if err != nil {
			return err
		}
		defer stop()
	}
	o.OnRound = func(r replicate.Round) {
		metrics.Observe(r)
		printRound(e, r, e.json)
	}
	abort, stopAbort := abortOnSecondSignal(e)
	defer stopAbort()
	o.Abort = abort
	if !f.watch {
		return runF(ctx, o, nil)
	}
	reload, stopReload := reloadOnHUP(ctx)
	defer stopReload()
	err = runF(ctx, o, &replicate.WatchOptions{Reload: reload})
	if errors.Is(err, context.Canceled) && ctx.Err() != nil {
		fmt.Fprintln(e.stderr, "ferry sync: stopped")
		return nil // a signal is how a watch ends
	}
	return err
}

// syncOptions turns the flags into replicate.Options, checking everything
// that can be checked before any request.
func syncOptions(e *env, f *syncFlags) (replicate.Options, func(), error) {
	none := func() {}
	if len(f.files) == 0 {
		return replicate.Options{}, none, usagef("sync needs at least one mapping file (-f FILE)")
	}
	if f.to != "" {
		if err := checkTarget(f.to); err != nil {
			return replicate.Options{}, none, err
		}
	}
	if slices.Contains(f.files, "-") {
		switch {
		case f.watch:
			return replicate.Options{}, none, usagef("-f - cannot be watched: --watch reads the files again when they change; give a file")
		case f.passwordStdin:
			return replicate.Options{}, none, usagef("-f - and --password-stdin both read standard input; give the password in $FERRY_PASSWORD")
		}
	}
	if err := checkInputs(f.files, "mapping file"); err != nil {
		return replicate.Options{}, none, err
	}
	o := replicate.Options{
		Tasks: f.tasks, To: f.to, Jobs: f.jobs, DryRun: f.dryRun,
		Platforms: parsePlatforms(f.platform), Username: f.username, Logger: e.logger(),
	}
	var err error
	if o.Mirrors, err = parseMirrors(f.mirrors); err != nil {
		return o, none, err
	}
	files, cleanup, err := stdinFiles(e, f.files)
	if err != nil {
		return o, cleanup, err
	}
	o.Files = files
	if o.Client, o.Keychain, o.Password, err = f.connect(e); err != nil {
		return o, cleanup, err
	}
	return o, cleanup, nil
}

// abortOnSecondSignal: the first Ctrl-C (or SIGTERM) cancels the context
// (main): no new blob starts, those in flight finish. A second one closes
// the returned channel, which aborts them.
func abortOnSecondSignal(e *env) (abort chan struct{}, stop func()) {
	abort = make(chan struct{})
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	quit := make(chan struct{})
	go func() {
		for n := 1; ; n++ {
			select {
			case <-quit:
				return
			case <-sigs:
				if n == 1 {
					fmt.Fprintln(e.stderr, "ferry sync: stopping after the blobs in flight (interrupt again to abort them)")
					continue
				}
				close(abort)
				return
			}
		}
	}()
	return abort, func() { signal.Stop(sigs); close(quit) }
}

// reloadOnHUP turns SIGHUP into a reload request for the watch.
func reloadOnHUP(ctx context.Context) (reload chan struct{}, stop func()) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	reload = make(chan struct{}, 1)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				select {
				case reload <- struct{}{}:
				default:
				}
			}
		}
	}()
	return reload, func() { signal.Stop(hup) }
}

// printRound writes one line per round on stdout, and the failures on
// stderr.
func printRound(e *env, r replicate.Round, asJSON bool) {
	if asJSON {
		b, err := json.Marshal(r)
		if err == nil {
			fmt.Fprintf(e.stdout, "%s\n", b)
		}
	} else {
		fmt.Fprintln(e.stdout, roundLine(r))
	}
	for _, w := range r.Warnings {
		fmt.Fprintf(e.stderr, "warning: task %s: %s\n", r.Task, w)
	}
	for _, line := range roundFailures(r) {
		fmt.Fprintf(e.stderr, "failed: task %s: %s\n", r.Task, line)
	}
	if r.Err != nil && len(r.Failures) == 0 {
		fmt.Fprintf(e.stderr, "failed: task %s: %v\n", r.Task, r.Err)
	}
}

// roundFailures are the lines that name a round's failed images: one per
// image, but one per Harbor policy refusal however many images it
// stopped (as import says them).
func roundFailures(r replicate.Round) []string {
	var out []string
	for _, fl := range r.Failures {
		if fl.Refusal == "" {
			out = append(out, fl.Image+": "+fl.Error)
		}
	}
	for _, rf := range r.Refusals {
		out = append(out, rf.Message+" (hint: "+rf.Hint+")")
	}
	return out
}

func roundLine(r replicate.Round) string {
	target := r.Target
	if target == "" {
		target = "?"
	}
	verb := "copied"
	if r.DryRun {
		verb = "to copy"
	}
	status := "ok"
	if r.Err != nil {
		status = "FAILED"
	}
	return fmt.Sprintf("%s %s → %s: %s; %d %s, %d unchanged, %d failed; %s uploaded, %s mounted; %d pulls (manifest GETs), %d blob GETs in %.1fs",
		r.Start.Format(time.RFC3339), r.Task, target, status, r.Copied, verb, r.Unchanged, r.Failed,
		units.Bytes(r.Bytes), units.Bytes(r.Mounted), r.Pulls, r.BlobGETs, r.Seconds)
}

// serveMetrics listens at once (so a bad address fails the command) and
// serves until stop or ctx ends.
func serveMetrics(ctx context.Context, e *env, addr string, m http.Handler) (stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, usagef("--metrics-addr %s: %v", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", m)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	fmt.Fprintf(e.stderr, "metrics on http://%s/metrics\n", ln.Addr())
	return func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}, nil
}

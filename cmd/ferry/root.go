package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/ferry-airgap/ferry/export"
	"github.com/ferry-airgap/ferry/internal/registry"
	"github.com/ferry-airgap/ferry/mapping"
	"github.com/ferry-airgap/ferry/push"
	"github.com/ferry-airgap/ferry/replicate"
)

// env is what commands may touch of the outside world.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	verbose        bool
	quiet          bool
	// json is set by a command's --json flag; jsonDone once the command
	// wrote its JSON result (carrying the error, if any), so that execute
	// does not print a second object.
	json, jsonDone bool
	// jsonLines: the command writes one JSON object per line (sync), so
	// an error object is one line too.
	jsonLines bool
}

// runners are the library calls of the commands that talk to registries.
// A zero field means the real one; tests replace them to check flag
// handling without registries (gh's NewCmdX(f, runF) seam).
type runners struct {
	export func(context.Context, export.Options) (*export.Summary, error)
	push   func(context.Context, push.Options) (*push.Summary, error)
	sync   func(context.Context, replicate.Options, *replicate.WatchOptions) error // nil WatchOptions: one run
}

func (e *env) logger() *slog.Logger {
	level := slog.LevelWarn
	if e.verbose {
		level = slog.LevelInfo
	}
	return slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: level}))
}

func newRootCmd(e *env, r runners) *cobra.Command {
	root := &cobra.Command{
		Use:   "ferry",
		Short: "Carry container images across an air gap",
		Long: `ferry carries container images across an air gap.

On the internet side, 'ferry export' resolves dregsy-style mapping files into
exact digests and writes one bundle file: an OCI image layout inside a tar,
every blob stored once. On the internal side, 'ferry import' checks every
byte and pushes the bundle into Harbor or any registry.

Exit status: 0 success; 1 the operation failed; 2 bad usage or bad input
(unknown command or flag, malformed --to, a missing input file, a file
that is not a bundle, a bundle import refuses when it opens it, an output
that would overwrite an input): nothing was sent to any registry; 130 or 143
interrupted by SIGINT or SIGTERM (nothing is left half-written; serve,
cache and sync --watch, which run until stopped, exit 0). With --json, a
failure is also an "error" object on stdout.`,
		Example: `  # internet side: resolve the mapping files and write one bundle
  ferry export -f images.yaml -o bundle.tar

  # internal side: check every byte, then push into Harbor
  ferry verify bundle.tar
  ferry import bundle.tar --to harbor.internal --username admin --password-stdin < pw.txt`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       buildVersion(),
		Args:          cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return cmd.Help()
			}
			msg := fmt.Sprintf("unknown command %q for ferry", args[0])
			if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
				msg += fmt.Sprintf(" (did you mean %s?)", strings.Join(s, ", "))
			}
			return usagef("%s; see ferry --help", msg)
		},
	}
	root.SuggestionsMinimumDistance = 2
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.PersistentFlags().BoolVarP(&e.verbose, "verbose", "v", false, "log what ferry does to stderr")
	root.PersistentFlags().BoolVarP(&e.quiet, "quiet", "q", false, "no progress output")
	root.AddCommand(newExportCmd(e, r.export), newInspectCmd(e), newVerifyCmd(e), newImportCmd(e, r.push), newServeCmd(e), newMirrorsCmd(e), newKeygenCmd(e), newSyncCmd(e, r.sync), newDiffCmd(e), newCacheCmd(e), newUnpackCmd(e), newInventoryCmd(e))
	return root
}

// regFlags are the registry connection flags shared by commands that talk
// to registries.
type regFlags struct {
	authFile      string
	username      string
	passwordStdin bool
	caCerts       []string
	certsDir      string
	insecure      bool
	plainHTTP     bool
	jobs          int
}

func (f *regFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&f.authFile, "auth-file", "", "credentials file: docker config.json or a Kubernetes pull secret")
	fl.StringVar(&f.username, "username", "", "registry username (with --password-stdin or $FERRY_PASSWORD)")
	fl.BoolVar(&f.passwordStdin, "password-stdin", false, "read the password from standard input")
	fl.StringArrayVar(&f.caCerts, "ca-cert", nil, "trust this PEM CA certificate file (repeatable)")
	fl.StringVar(&f.certsDir, "certs-dir", "", "docker certs.d layout: DIR/<host[:port]>/ca.crt, client.cert, client.key")
	fl.BoolVar(&f.insecure, "insecure-skip-tls-verify", false, "do not verify registry certificates (tests only)")
	fl.BoolVar(&f.plainHTTP, "plain-http", false, "talk plain HTTP to every registry")
	fl.IntVar(&f.jobs, "jobs", registry.DefaultJobs, "parallel transfers")
}

// password reads the password from stdin or $FERRY_PASSWORD, never from
// an argument.
func (f *regFlags) password(e *env) (string, error) {
	if f.passwordStdin {
		if f.username == "" {
			return "", usagef("--password-stdin needs --username")
		}
		line, err := bufio.NewReader(e.stdin).ReadString('\n')
		if err != nil && err != io.EOF {
			return "", fmt.Errorf("reading password from stdin: %w", err)
		}
		pw := strings.TrimRight(line, "\r\n")
		if pw == "" {
			return "", usagef("--password-stdin: standard input holds no password (an empty first line)")
		}
		return pw, nil
	}
	if f.username != "" {
		if pw, ok := os.LookupEnv("FERRY_PASSWORD"); ok {
			if pw == "" {
				return "", usagef("--username %s: $FERRY_PASSWORD is empty", f.username)
			}
			return pw, nil
		}
		return "", usagef("--username needs a password: --password-stdin or $FERRY_PASSWORD")
	}
	return "", nil
}

// connect builds the registry client and keychain from the flags and reads
// the password (from stdin or $FERRY_PASSWORD) when a username is given.
func (f *regFlags) connect(e *env) (*registry.Client, *registry.Keychain, string, error) {
	client, kc, err := f.client(e)
	if err != nil {
		return nil, nil, "", err
	}
	pw, err := f.password(e)
	if err != nil {
		return nil, nil, "", err
	}
	return client, kc, pw, nil
}

func (f *regFlags) client(e *env) (*registry.Client, *registry.Keychain, error) {
	if f.jobs < 1 {
		return nil, nil, usagef("--jobs must be at least 1")
	}
	c, err := registry.New(registry.Options{
		UserAgent:          "ferry/" + buildVersion(),
		CACertFiles:        f.caCerts,
		CertsDir:           f.certsDir,
		InsecureSkipVerify: f.insecure,
		PlainHTTP:          f.plainHTTP,
		Logger:             e.logger(),
	})
	if err != nil {
		return nil, nil, err
	}
	kc, err := registry.NewKeychain(f.authFile)
	if err != nil {
		return nil, nil, err
	}
	return c, kc, nil
}

// parseMirrors reads --mirror SOURCE=MIRROR values, keyed by canonical source.
func parseMirrors(list []string) (map[string]string, error) {
	mirrors := map[string]string{}
	for _, m := range list {
		src, dst, ok := strings.Cut(m, "=")
		if !ok || src == "" || dst == "" {
			return nil, usagef("--mirror %q: want SOURCE=MIRROR", m)
		}
		mirrors[mapping.CanonicalRegistry(src)] = dst
	}
	return mirrors, nil
}

// parsePlatforms splits --platform; "" keeps each mapping's choice (nil).
func parsePlatforms(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

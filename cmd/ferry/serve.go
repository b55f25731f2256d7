package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net"

	"github.com/spf13/cobra"

	"github.com/ferry-airgap/ferry/serve"
)

type serveFlags struct {
	addr        string
	prefix      string
	sourceNames bool
	listenFlags
}

// listenFlags are the flags of the commands that answer HTTP themselves
// (serve, cache): TLS, basic auth and the access log's format.
type listenFlags struct {
	tlsCert, tlsKey string
	htpasswd        string
	jsonLog         bool
}

func (f *listenFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&f.tlsCert, "tls-cert", "", "serve HTTPS with this PEM certificate (with --tls-key)")
	fl.StringVar(&f.tlsKey, "tls-key", "", "PEM private key for --tls-cert")
	fl.StringVar(&f.htpasswd, "htpasswd", "", "require basic auth against this htpasswd file (bcrypt: htpasswd -B)")
	fl.BoolVar(&f.jsonLog, "json-log", false, "access log as JSON lines")
}

// load checks --tls-cert and --tls-key and reads --htpasswd (nil without
// it); log is the access log on stderr, as JSON lines with --json-log.
func (f *listenFlags) load(e *env) (log *slog.Logger, auth *serve.Htpasswd, err error) {
	if (f.tlsCert == "") != (f.tlsKey == "") {
		return nil, nil, usagef("--tls-cert and --tls-key go together")
	}
	if f.tlsCert != "" {
		if _, err := serve.LoadTLS(f.tlsCert, f.tlsKey); err != nil {
			return nil, nil, usageError{err}
		}
	}
	var handler slog.Handler = slog.NewTextHandler(e.stderr, nil)
	if f.jsonLog {
		handler = slog.NewJSONHandler(e.stderr, nil)
	}
	if f.htpasswd != "" {
		if auth, err = serve.LoadHtpasswd(f.htpasswd); err != nil {
			return nil, nil, usageError{err}
		}
	}
	return slog.New(handler), auth, nil
}

func newServeCmd(e *env) *cobra.Command {
	var f serveFlags
	cmd := &cobra.Command{
		Use:   "serve BUNDLE.tar [MORE.tar...] [--addr 127.0.0.1:5000]",
		Short: "Serve bundles as a read-only registry (pull only)",
		Long: `Answer registry pulls straight from bundle files, with no extraction: the
pull side of the OCI distribution API (manifests, blobs with Range, tags
list, catalog, referrers). Push and delete answer 405 UNSUPPORTED.

Images are served under their target path (/v2/TARGET/...); --prefix adds a
leading path, --source-names also serves them under their source name with
the registry host first (/v2/docker.io/library/redis/...). Several bundles
are served as one; for the same name and tag a later bundle wins.

Prints "serving on ADDRESS" on stderr once listening, then one access-log
line per request. SIGTERM or Ctrl-C shuts down gracefully (exit status 0).`,
		Example: `  # pull from the bundle on this host
  ferry serve bundle.tar --addr 127.0.0.1:5000
  docker pull 127.0.0.1:5000/spaceone/console:1.11.0

  # for a cluster: HTTPS and basic auth
  ferry serve bundle.tar --addr :5443 --tls-cert srv.crt --tls-key srv.key --htpasswd users.htpasswd`,
		Args: bundleArgs("serve"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runServe(cmd, e, &f, args)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.addr, "addr", "127.0.0.1:5000", "listen address (port 0: any free port)")
	fl.StringVar(&f.prefix, "prefix", "", "serve every image under this leading path")
	fl.BoolVar(&f.sourceNames, "source-names", false, "also serve images under their source name, registry host first (docker.io/library/redis)")
	f.listenFlags.register(cmd)
	return cmd
}

func runServe(cmd *cobra.Command, e *env, f *serveFlags, paths []string) error {
	log, auth, err := f.load(e)
	if err != nil {
		return err
	}
	opts := []serve.Option{serve.WithPrefix(f.prefix), serve.WithSourceNames(f.sourceNames), serve.WithLogger(log)}
	if auth != nil {
		opts = append(opts, serve.WithBasicAuth(auth, "ferry"))
	}
	readers, err := openBundles(paths)
	if err != nil {
		return err
	}
	defer closeBundles(readers)
	reg, err := serve.New(readers, opts...)
	if errors.Is(err, serve.ErrOptions) {
		return usageError{err}
	}
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", f.addr)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", f.addr, err)
	}
	scheme := "http"
	if f.tlsCert != "" {
		scheme = "https"
	}
	fmt.Fprintf(e.stderr, "serving on %s (%s, %d repositories from %d bundles)\n", ln.Addr(), scheme, len(reg.Names()), len(readers))
	err = serve.Serve(cmd.Context(), ln, serve.AccessLog(reg, log), serve.ServerConfig{
		TLSCertFile: f.tlsCert, TLSKeyFile: f.tlsKey, Logger: log,
	})
	if err == nil {
		fmt.Fprintln(e.stderr, "shut down")
	}
	return err
}

package main

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/ferry-airgap/ferry/internal/units"
	"github.com/ferry-airgap/ferry/serve"
	"github.com/ferry-airgap/ferry/static"
)

type unpackFlags struct {
	static      string
	prefix      string
	sourceNames bool
	listen      string
	serverName  string
	tlsCert     string
	tlsKey      string
	jobs        int
}

func newUnpackCmd(e *env) *cobra.Command {
	var f unpackFlags
	cmd := &cobra.Command{
		Use:   "unpack BUNDLE.tar [MORE.tar...] --static DIR",
		Short: "Write bundles as a tree of files that any static web server serves as a read-only registry",
		Example: `  # a tree and nginx.conf for nginx on this host
  ferry unpack cloudforet.tar --static /srv/registry
  nginx -t && nginx -s reload    # after including /srv/registry/nginx.conf in http {}

  # a delta on top of its base, into the same tree (writes only what changed)
  ferry unpack cloudforet-delta.tar --static /srv/registry`,
		Long: `Write the images of bundles into DIR as a static registry:
DIR/v2/NAME/manifests/TAG and .../sha256:DIGEST, DIR/v2/NAME/blobs/sha256:DIGEST
(one copy per blob, hard links where the filesystem allows), DIR/v2/NAME/tags/list,
and DIR/nginx.conf: maps and a server block for core nginx (no njs) that set
Content-Type and Docker-Content-Digest per manifest and answer unknown names,
tags and blobs with OCI error bodies. Include it in nginx's http block.

Every blob's digest is checked as it is written; files appear complete or
not at all. A rerun writes only what changed; tags that move are replaced
atomically. Unpacking only adds: a delta bundle unpacks on top of its base
into the same DIR (or give both, base first). Reload nginx after each run.

DIR must be new, empty, or a tree ferry wrote: an nginx.conf there that ferry
did not write (--static /etc/nginx), a regular file, or a folder of other
files is refused (exit 2) before anything is written.`,
		Args: bundleArgs("unpack"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runUnpack(cmd, e, &f, args)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.static, "static", "", "write the static registry tree into this directory (required)")
	fl.StringVar(&f.prefix, "prefix", "", "write every image under this leading path")
	fl.BoolVar(&f.sourceNames, "source-names", false, "also write images under their source name, registry host first (docker.io/library/redis)")
	fl.StringVar(&f.listen, "listen", static.DefaultNginx.Listen, "nginx.conf: the server's listen parameter (port or address:port)")
	fl.StringVar(&f.serverName, "server-name", static.DefaultNginx.ServerName, "nginx.conf: the server_name")
	fl.StringVar(&f.tlsCert, "tls-cert", "", "nginx.conf: listen with TLS using this PEM certificate file (with --tls-key)")
	fl.StringVar(&f.tlsKey, "tls-key", "", "nginx.conf: PEM private key file for --tls-cert")
	fl.IntVar(&f.jobs, "jobs", static.DefaultJobs, "blobs written at once")
	fl.BoolVar(&e.json, "json", false, "print a JSON summary on stdout (with an \"error\" object on failure)")
	return cmd
}

func runUnpack(cmd *cobra.Command, e *env, f *unpackFlags, paths []string) error {
	if f.static == "" {
		return usagef("unpack needs --static DIR (the only output it writes so far)")
	}
	if f.jobs < 1 {
		return usagef("--jobs must be at least 1")
	}
	readers, err := openBundles(paths)
	if err != nil {
		return err
	}
	defer closeBundles(readers)
	prog := newProgress(e, "unpack")
	sum, err := static.Unpack(cmd.Context(), readers, f.static,
		static.WithPrefix(f.prefix), static.WithSourceNames(f.sourceNames), static.WithJobs(f.jobs),
		static.WithLogger(e.logger()), static.WithProgress(prog),
		static.WithNginx(static.Nginx{Listen: f.listen, ServerName: f.serverName, TLSCert: f.tlsCert, TLSKey: f.tlsKey}))
	prog.finish()
	if errors.Is(err, serve.ErrOptions) || errors.Is(err, static.ErrOptions) {
		return usageError{err}
	}
	if e.json {
		return writeResult(e, sum, err)
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "%s: %d repositories, %d tags (%d new or moved); %d blobs written (%s), %d already there; %d files placed\n",
		sum.Dir, sum.Repositories, sum.Tags, sum.TagsChanged, sum.BlobsWritten, units.Bytes(sum.BytesWritten), sum.BlobsPresent, sum.FilesWritten)
	if sum.Copied {
		fmt.Fprintln(e.stdout, "note: this filesystem has no hard links here; blobs were copied")
	}
	fmt.Fprintf(e.stdout, "the tree serves %d repositories, %d tags; include %s in nginx's http block and run nginx -s reload\n",
		sum.TreeRepositories, sum.TreeTags, sum.NginxConf)
	return nil
}

package main

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/ferry-airgap/ferry/bundle"
	"github.com/ferry-airgap/ferry/internal/objstore"
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
	prune       bool
	keep        []string
	dryRun      bool
	s3Endpoint  string
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
  ferry unpack cloudforet-delta.tar --static /srv/registry

  # this week's bundle only: drop the tags it does not carry (keep any 1.x of app/web)
  ferry unpack cloudforet-2026-02.tar --static /srv/registry --prune --keep 'app/web:1\..*' --dry-run

  # the same tree as objects in a bucket (credentials from the AWS environment)
  ferry unpack cloudforet.tar --static s3://registry-site/ --s3-endpoint https://minio.corp:9000`,
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
files is refused (exit 2) before anything is written.

--prune makes the tree hold exactly the tags the given bundles carry (plus
the tags a --keep pattern matches, against the whole tag or the whole
REPO:TAG): removed tags leave tags/list first, then their manifests and
blobs go where nothing kept references them. --dry-run says what would go.

--static s3://BUCKET/PREFIX writes the same tree as objects (no nginx.conf,
no tag list pages), each with its Content-Type and digest metadata, blobs
before manifests before tags before tags/list; a rerun lists the prefix and
writes only what is missing or changed. See docs/static.md for serving it.`,
		Args: bundleArgs("unpack"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runUnpack(cmd, e, &f, args)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.static, "static", "", "write the static registry tree into this directory, or s3://BUCKET/PREFIX (required)")
	fl.StringVar(&f.s3Endpoint, "s3-endpoint", "", "with --static s3://: URL of a non-AWS S3 server (path-style); plain http for loopback only (default $AWS_ENDPOINT_URL_S3, $AWS_ENDPOINT_URL)")
	fl.StringVar(&f.prefix, "prefix", "", "write every image under this leading path")
	fl.BoolVar(&f.sourceNames, "source-names", false, "also write images under their source name, registry host first (docker.io/library/redis)")
	fl.StringVar(&f.listen, "listen", static.DefaultNginx.Listen, "nginx.conf: the server's listen parameter (port or address:port)")
	fl.StringVar(&f.serverName, "server-name", static.DefaultNginx.ServerName, "nginx.conf: the server_name")
	fl.StringVar(&f.tlsCert, "tls-cert", "", "nginx.conf: listen with TLS using this PEM certificate file (with --tls-key)")
	fl.StringVar(&f.tlsKey, "tls-key", "", "nginx.conf: PEM private key file for --tls-cert")
	fl.IntVar(&f.jobs, "jobs", static.DefaultJobs, "blobs written at once")
	fl.BoolVar(&f.prune, "prune", false, "remove the tags the bundles do not carry, and what only they referenced")
	fl.StringArrayVar(&f.keep, "keep", nil, "with --prune: also keep the tags this regular expression matches, whole, as TAG or REPO:TAG (repeatable)")
	fl.BoolVar(&f.dryRun, "dry-run", false, "with --prune: say what would be removed and the bytes freed; change nothing")
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
	if !f.prune && (len(f.keep) > 0 || f.dryRun) {
		return usagef("--keep and --dry-run go with --prune")
	}
	if strings.HasPrefix(f.static, "s3://") {
		return runUnpackS3(cmd, e, f, paths)
	}
	if f.s3Endpoint != "" {
		return usagef("--s3-endpoint goes with --static s3://BUCKET/PREFIX")
	}
	opts := []static.Option{static.WithPrefix(f.prefix), static.WithSourceNames(f.sourceNames), static.WithJobs(f.jobs),
		static.WithLogger(e.logger()),
		static.WithNginx(static.Nginx{Listen: f.listen, ServerName: f.serverName, TLSCert: f.tlsCert, TLSKey: f.tlsKey})}
	if f.prune {
		opts = append(opts, static.WithPrune(f.keep...), static.WithDryRun(f.dryRun))
	}
	sum, err := runStatic(cmd, e, paths, func(ctx context.Context, readers []*bundle.Reader, prog bundle.Progress) (*static.Summary, error) {
		return static.Unpack(ctx, readers, f.static, append(opts, static.WithProgress(prog))...)
	})
	if sum == nil || err != nil {
		return err
	}
	if sum.Pruned != nil && sum.Pruned.DryRun {
		printPrune(e, sum.Pruned)
		return nil
	}
	fmt.Fprintf(e.stdout, "%s: %d repositories, %d tags (%d new or moved); %d blobs written (%s), %d already there; %d files placed\n",
		sum.Dir, sum.Repositories, sum.Tags, sum.TagsChanged, sum.BlobsWritten, units.Bytes(sum.BytesWritten), sum.BlobsPresent, sum.FilesWritten)
	if sum.Copied {
		fmt.Fprintln(e.stdout, "note: this filesystem has no hard links here; blobs were copied")
	}
	fmt.Fprintf(e.stdout, "the tree serves %d repositories, %d tags; include %s in nginx's http block and run nginx -s reload\n",
		sum.TreeRepositories, sum.TreeTags, sum.NginxConf)
	if sum.Pruned != nil {
		printPrune(e, sum.Pruned)
	}
	return nil
}

// runUnpackS3 writes the tree into a bucket: what nginx.conf and pruning
// are about does not apply there.
func runUnpackS3(cmd *cobra.Command, e *env, f *unpackFlags, paths []string) error {
	for _, name := range []string{"listen", "server-name", "tls-cert", "tls-key", "prune"} {
		if cmd.Flags().Changed(name) {
			return usagef("--%s is for a tree in a directory; --static s3:// writes no nginx.conf and only adds", name)
		}
	}
	loc, err := objstore.ParseLocation(f.static)
	if err != nil {
		return usagef("--static: %v", err)
	}
	st, err := objstore.Open(loc, objstore.Options{Endpoint: f.s3Endpoint})
	if err != nil {
		return usagef("--static: %v", err)
	}
	sum, err := runStatic(cmd, e, paths, func(ctx context.Context, readers []*bundle.Reader, prog bundle.Progress) (*static.Summary, error) {
		return static.UnpackS3(ctx, readers, st, static.WithPrefix(f.prefix), static.WithSourceNames(f.sourceNames),
			static.WithJobs(f.jobs), static.WithLogger(e.logger()), static.WithProgress(prog))
	})
	if sum == nil || err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "%s: %d repositories, %d tags (%d new or moved); %d blobs uploaded (%s), %d already there; %d objects written\n",
		sum.Dir, sum.Repositories, sum.Tags, sum.TagsChanged, sum.BlobsWritten, units.Bytes(sum.BytesWritten), sum.BlobsPresent, sum.FilesWritten)
	fmt.Fprintf(e.stdout, "the tree serves %d repositories, %d tags; serve the bucket as a website or through a CDN (docs/static.md)\n",
		sum.TreeRepositories, sum.TreeTags)
	return nil
}

// runStatic opens the bundles and runs unpack with progress, and does
// what both outputs share: bad options are usage errors (exit 2), --json
// prints the result. It returns the summary only when the caller is to
// print it.
func runStatic(cmd *cobra.Command, e *env, paths []string, unpack func(context.Context, []*bundle.Reader, bundle.Progress) (*static.Summary, error)) (*static.Summary, error) {
	readers, err := openBundles(paths)
	if err != nil {
		return nil, err
	}
	defer closeBundles(readers)
	prog := newProgress(e, "unpack")
	sum, err := unpack(cmd.Context(), readers, prog)
	prog.finish()
	switch {
	case errors.Is(err, serve.ErrOptions) || errors.Is(err, static.ErrOptions):
		return nil, usageError{err}
	case e.json:
		return nil, writeResult(e, sum, err)
	case err != nil:
		return nil, err
	}
	return sum, nil
}

// printPrune says what --prune removed or, with --dry-run, would remove.
func printPrune(e *env, p *static.PruneSummary) {
	verb, did := "pruned", "removed"
	if p.DryRun {
		verb, did = "dry run, nothing changed", "would be removed"
	}
	fmt.Fprintf(e.stdout, "%s: %d tags, %d manifests, %d blobs %s (%d files, %s freed); %d repositories left without tags\n",
		verb, len(p.Tags), len(p.Manifests), len(p.Blobs), did, p.Files, units.Bytes(p.BytesFreed), len(p.Repositories))
	for _, tag := range p.Tags {
		fmt.Fprintf(e.stdout, "  tag %s\n", tag)
	}
	for _, tag := range p.Kept {
		fmt.Fprintf(e.stdout, "  kept by --keep: %s\n", tag)
	}
	for _, m := range p.Manifests {
		fmt.Fprintf(e.stdout, "  manifest %s\n", m)
	}
	for _, b := range p.Blobs {
		fmt.Fprintf(e.stdout, "  blob %s\n", b)
	}
	for _, u := range p.Unknown {
		fmt.Fprintf(e.stderr, "warning: %s: not written by ferry; left alone\n", u)
	}
}

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/ferry-airgap/ferry/bundle"
	"github.com/ferry-airgap/ferry/export"
	"github.com/ferry-airgap/ferry/internal/units"
)

type exportFlags struct {
	regFlags
	files     []string
	tasks     []string
	output    string
	dryRun    bool
	keepGoing bool
	platform  string
	mirrors   []string
	cache     string
	minQuota  int
	split     string
	since     string
	signKey   string
	referrers bool
	force     bool
	charts    chartFlags
	have      []string
	trustKeys []string
	docker    string
	deep      deepFlags
}

func newExportCmd(e *env, runF func(context.Context, export.Options) (*export.Summary, error)) *cobra.Command {
	if runF == nil {
		runF = export.Run
	}
	var f exportFlags
	cmd := &cobra.Command{
		Use:   "export -f MAPPINGS.yaml [-f MORE.yaml] -o BUNDLE.tar",
		Short: "Resolve mapping files and write one bundle (internet side)",
		Long: `Resolve dregsy-style mapping files against their source registries and write
one bundle file: an OCI image layout inside a tar, every blob stored once,
with ferry.json recording where each image must go, and BUNDLE.tar.sha256
beside it for 'sha256sum -c'.

By default the whole upstream index of a multi-platform image is kept, so
tags keep their upstream digests. --platform (or a mapping's platform:)
narrows it; the bundle then holds a rewritten index with a new digest and
records the upstream one.

The output is checked before any request: an output that is one of the
inputs, a folder, a path in a folder that does not exist, or an existing
file that is not a ferry bundle (without --force) is refused with exit 2.`,
		Example: `  # preview: resolve tags to digests, fetch no blob
  ferry export -f images.yaml --dry-run

  # write the bundle (and bundle.tar.sha256 beside it)
  ferry export -f images.yaml -o bundle.tar

  # a private source registry; the password from a file, never an argument
  ferry export -f images.yaml -o bundle.tar --username ci --password-stdin < pw.txt

  # the mapping file from a pipe
  generate-mappings | ferry export -f - -o bundle.tar`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runExport(cmd, e, &f, runF)
		},
	}
	fl := cmd.Flags()
	fl.StringArrayVarP(&f.files, "file", "f", nil, "mapping file in dregsy format (repeatable; merged)")
	fl.StringArrayVar(&f.tasks, "task", nil, "export only this task (repeatable)")
	fl.StringVarP(&f.output, "output", "o", "", "bundle file to write")
	fl.BoolVar(&e.json, "json", false, "print a JSON summary on stdout (with an \"error\" object on failure)")
	fl.BoolVar(&f.dryRun, "dry-run", false, "resolve and list what would be exported; transfer no blob")
	fl.BoolVar(&f.keepGoing, "keep-going", false, "write what succeeded when some images fail (exit status stays 1)")
	fl.StringVar(&f.platform, "platform", "", "platforms to keep: os/arch[/variant][,...] or all (default: each mapping's platform, else all)")
	fl.StringArrayVar(&f.mirrors, "mirror", nil, "fetch images of SOURCE from MIRROR: SOURCE=MIRROR (repeatable)")
	fl.StringVar(&f.cache, "cache", "", "keep fetched manifests and blobs in DIR; a rerun downloads only what changed")
	fl.BoolVar(&f.referrers, "with-referrers", false, "also export cosign signatures, attestations and SBOMs (sha256-<digest>.sig/.att/.sbom tags)")
	fl.StringVar(&f.since, "since", "", "write a delta: leave out what PREVIOUS (a bundle or its ferry.json) already carried")
	fl.StringArrayVar(&f.have, "have", nil, "leave out what this inventory (from ferry inventory) says the target holds (repeatable: one bundle for several sites)")
	fl.StringArrayVar(&f.trustKeys, "trust-key", nil, "with --have: require each inventory to be signed by this public key (repeatable: any may match)")
	fl.StringVar(&f.split, "split", "", "write volumes OUTPUT.000, .001, ... each below SIZE (e.g. 4GiB for FAT32, 700M)")
	fl.StringVar(&f.signKey, "sign-key", "", "sign the bundle with this Ed25519 private key (PEM, from ferry keygen): ferry.sig inside, OUTPUT.sig beside")
	fl.IntVar(&f.minQuota, "min-quota", 0, "stop cleanly before Docker Hub's remaining pull quota drops below N (0: off)")
	fl.BoolVar(&f.force, "force", false, "overwrite an existing -o file that is not a ferry bundle")
	fl.Var(f.charts.value(chartFlagChart), "chart", "also carry this Helm chart and the images it renders: REPO/NAME@VERSION, REPO an https:// Helm repository or oci:// path (repeatable)")
	fl.Var(f.charts.value(chartFlagExclude), "chart-exclude", "leave out the images of the --chart before it whose name PATTERN matches (a regex matched against the whole name, as written and as docker.io/library/NAME; !PATTERN: those it does not match; repeatable)")
	fl.Var(f.charts.value(chartFlagExtra), "chart-extra-image", "also carry REF (with a tag or digest), an image the --chart before it pulls at run time that no template names (repeatable)")
	fl.StringVar(&f.docker, "docker-platform", bundle.DefaultDockerPlatform, "platform os/arch[/variant] the bundle's manifest.json (for docker load) takes from multi-platform images, or none")
	f.deep.register(cmd, "decompress every layer once written and check it against its image config's diff_id; refuse the images that fail")
	f.regFlags.register(cmd)
	return cmd
}

func runExport(cmd *cobra.Command, e *env, f *exportFlags, runF func(context.Context, export.Options) (*export.Summary, error)) error {
	deep, err := f.deep.limits(cmd)
	if err != nil {
		return err
	}
	o, cleanup, err := exportOptions(e, f)
	defer cleanup()
	if err != nil {
		return err
	}
	o.Deep = deep
	prog := newProgress(e, "export")
	o.Progress = prog
	sum, err := runF(cmd.Context(), o)
	prog.finish()
	if errors.Is(err, export.ErrNothingNew) {
		// Not a failure: a scheduled delta export found nothing to carry.
		fmt.Fprintf(e.stderr, "%v: no bundle written\n", err)
		err = nil
	}
	done, err := resultHead(cmd, e, sum, err, func(s *export.Summary) (warnings, failed []string) {
		for _, fl := range s.Failures {
			failed = append(failed, fl.Source+": "+fl.Error)
		}
		return s.Warnings, failed
	})
	if done {
		return err
	}
	printExportSummary(e.stdout, sum)
	if o.Signer != nil && sum.Output != "" {
		fmt.Fprintf(e.stdout, "signed: ferry.sig inside, %s.sig beside (check with: ferry verify --trust-key KEY.pub %s)\n", sum.Output, sum.Output)
	}
	return err
}

// exportOptions turns the flags into export.Options, checking everything
// that can be checked before any request: the output, the inputs, the
// flag values, the password.
func exportOptions(e *env, f *exportFlags) (export.Options, func(), error) {
	none := func() {}
	if len(f.files) == 0 && len(f.charts.entries) == 0 {
		return export.Options{}, none, usagef("export needs at least one mapping file (-f FILE) or --chart")
	}
	charts, err := f.charts.parse()
	if err != nil {
		return export.Options{}, none, err
	}
	if f.output == "" && !f.dryRun {
		return export.Options{}, none, usagef("export needs an output file (-o BUNDLE.tar)")
	}
	if f.passwordStdin && slices.Contains(f.files, "-") {
		return export.Options{}, none, usagef("-f - and --password-stdin both read standard input; give the password in $FERRY_PASSWORD")
	}
	if _, _, err := bundle.SourceDateEpoch(); err != nil {
		return export.Options{}, none, usageError{err} // before any request: it would fail only when writing
	}
	inputs := append(slices.Clone(f.files), f.since, f.signKey)
	inputs = append(inputs, f.have...)
	if f.output != "" && !f.dryRun {
		if err := export.CheckOutput(f.output, nonEmpty(inputs), f.force); err != nil {
			return export.Options{}, none, err
		}
	}
	if err := checkInputs(f.files, "mapping file"); err != nil {
		return export.Options{}, none, err
	}
	if err := checkBundles(nonEmpty([]string{f.since})); err != nil { // a bundle, its volumes or its ferry.json
		return export.Options{}, none, err
	}
	if err := checkInputs(f.have, "inventory"); err != nil {
		return export.Options{}, none, err
	}
	haveKeys, err := haveFlags(f)
	if err != nil {
		return export.Options{}, none, err
	}
	o := export.Options{
		Tasks: f.tasks, Output: f.output, Jobs: f.jobs, KeepGoing: f.keepGoing, DryRun: f.dryRun,
		Platforms: parsePlatforms(f.platform), Username: f.username,
		CacheDir: f.cache, MinQuota: f.minQuota, Since: f.since, WithReferrers: f.referrers,
		Logger: e.logger(), FerryVersion: buildVersion(),
		Have: f.have, HaveTrustKeys: haveKeys, Charts: charts,
	}
	if o.Mirrors, err = parseMirrors(f.mirrors); err != nil {
		return o, none, err
	}
	if o.DockerPlatform = f.docker; f.docker != "none" {
		if _, err := bundle.ParseDockerPlatform(f.docker); err != nil {
			return o, none, usagef("--docker-platform: %v", err)
		}
	}
	if f.split != "" {
		if o.Split, err = parseSize(f.split); err != nil {
			return o, none, usagef("--split: %v", err)
		}
	}
	if f.signKey != "" {
		key, err := bundle.LoadPrivateKey(f.signKey)
		if err != nil {
			return o, none, usageError{fmt.Errorf("--sign-key: %w", err)}
		}
		o.Signer = key
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

func printExportSummary(w io.Writer, s *export.Summary) {
	if len(s.Images) > 0 {
		tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "SOURCE\tDIGEST\tTARGET\tTAGS\tPLATFORMS\tSIZE")
		for _, im := range s.Images {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", im.Source, shortDigest(im.Digest), im.Target,
				tagList(im.Tags), kindOrPlatforms(im.Kind, im.Platforms), units.Bytes(im.Size))
		}
		_ = tw.Flush()
	}
	switch {
	case s.DryRun:
		fmt.Fprintf(w, "dry run: %s, %s, %s, %s (%s before deduplication); nothing transferred\n",
			plural(len(s.Images), "image"), plural(s.Tags, "tag"), plural(s.Blobs, "unique blob"), units.Bytes(s.Bytes), units.Bytes(s.Logical-s.BaseBytes))
		if multi := multiPlatform(s); multi > 0 {
			fmt.Fprintf(w, "note: %s keep their whole upstream index (same digests as upstream); --platform or a mapping's platform: narrows it (a rewritten index, new digest)\n", plural(multi, "multi-platform image"))
		}
	case s.UpToDate:
		fmt.Fprintf(w, "up to date: %s already holds these %d images, %d tags, %d unique blobs (%s); nothing written in %.1fs\n",
			s.Output, len(s.Images), s.Tags, s.Blobs, units.Bytes(s.BundleLen), s.Seconds)
		fmt.Fprintf(w, "sha256 %s  (check with: sha256sum -c %s.sha256)\n", s.SHA256, s.Output)
	case s.Output != "":
		fmt.Fprintf(w, "wrote %s: %s, %s, %s, %s (saved %s by deduplication) in %.1fs\n",
			s.Output, plural(len(s.Images), "image"), plural(s.Tags, "tag"), plural(s.Blobs, "unique blob"), units.Bytes(s.BundleLen), units.Bytes(s.Logical-s.Bytes-s.BaseBytes), s.Seconds)
		if len(s.Volumes) > 0 {
			fmt.Fprintf(w, "in %s: %s ... %s (check with: sha256sum -c %s.sha256)\n", plural(len(s.Volumes), "volume"), s.Volumes[0], s.Volumes[len(s.Volumes)-1], s.Output)
		} else {
			fmt.Fprintf(w, "sha256 %s  (check with: sha256sum -c %s.sha256)\n", s.SHA256, s.Output)
		}
	}
	for _, h := range s.Have {
		fmt.Fprintf(w, "cut against inventory %s of %s (taken %s)\n", h.ID, h.Target(), h.Created.Format("2006-01-02 15:04:05Z07:00"))
	}
	if len(s.Have) > 0 {
		fmt.Fprintf(w, "left out %s (%s): the inventories say the target has them\n", plural(s.BaseBlobs, "blob"), units.Bytes(s.BaseBytes))
	}
	if s.Base != "" {
		fmt.Fprintf(w, "delta of bundle %s: %s (%s) left to it (import that bundle first)\n", s.Base, plural(s.BaseBlobs, "blob"), units.Bytes(s.BaseBytes))
	}
	if s.ImagesUnchanged > 0 || s.BytesFromCache > 0 {
		fmt.Fprintf(w, "%s new, %d unchanged; %s downloaded, %s from the cache\n",
			plural(s.ImagesNew, "image"), s.ImagesUnchanged, units.Bytes(s.BytesDownloaded), units.Bytes(s.BytesFromCache))
	}
	if s.QuotaRemaining != nil {
		fmt.Fprintf(w, "pull quota: %d manifest GETs made, %d remaining\n", s.ManifestGETs, *s.QuotaRemaining)
	}
}

func shortDigest(d string) string {
	if len(d) > 19 {
		return d[:19]
	}
	return d
}

// kindOrPlatforms fills the PLATFORMS column: "helm-chart" for a chart.
func kindOrPlatforms(kind string, p []string) string {
	if kind != "" {
		return kind
	}
	return platformsOrAll(p)
}

func platformsOrAll(p []string) string {
	if len(p) == 0 {
		return "-"
	}
	return strings.Join(p, ",")
}

// parseSize reads a --split volume size with units.ParseBytes; a volume
// is at least 1 MiB.
func parseSize(s string) (int64, error) {
	n, err := units.ParseBytes(s)
	if err != nil {
		return 0, err
	}
	if n < 1<<20 {
		return 0, fmt.Errorf("%q is below the smallest volume size, 1 MiB", s)
	}
	return n, nil
}

// multiPlatform counts the images that are whole upstream indexes.
func multiPlatform(s *export.Summary) int {
	n := 0
	for _, im := range s.Images {
		if len(im.Platforms) > 1 && im.UpstreamDigest == "" {
			n++
		}
	}
	return n
}

// haveFlags checks --have and --trust-key and loads the keys.
func haveFlags(f *exportFlags) ([]bundle.TrustedKey, error) {
	switch {
	case len(f.trustKeys) > 0 && len(f.have) == 0:
		return nil, usagef("--trust-key checks --have inventories; give --have FILE")
	case len(f.have) > 0 && f.since != "":
		return nil, usagef("--since and --have: choose one (an inventory already says what the target holds)")
	}
	for _, h := range f.have {
		if h == f.output {
			return nil, usagef("-o %s would overwrite the inventory given to --have", f.output)
		}
	}
	return loadTrustKeys(f.trustKeys)
}

package main

import (
	"errors"
	"fmt"
	"io"
	"strconv"
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
	json      bool
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
}

func newExportCmd(e *env) *cobra.Command {
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
records the upstream one.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runExport(cmd, e, &f)
		},
	}
	fl := cmd.Flags()
	fl.StringArrayVarP(&f.files, "file", "f", nil, "mapping file in dregsy format (repeatable; merged)")
	fl.StringArrayVar(&f.tasks, "task", nil, "export only this task (repeatable)")
	fl.StringVarP(&f.output, "output", "o", "", "bundle file to write")
	fl.BoolVar(&f.json, "json", false, "print a JSON summary on stdout")
	fl.BoolVar(&f.dryRun, "dry-run", false, "resolve and list what would be exported; transfer no blob")
	fl.BoolVar(&f.keepGoing, "keep-going", false, "write what succeeded when some images fail (exit status stays 1)")
	fl.StringVar(&f.platform, "platform", "", "platforms to keep: os/arch[/variant][,...] or all (default: each mapping's platform, else all)")
	fl.StringArrayVar(&f.mirrors, "mirror", nil, "fetch images of SOURCE from MIRROR: SOURCE=MIRROR (repeatable)")
	fl.StringVar(&f.cache, "cache", "", "keep fetched manifests and blobs in DIR; a rerun downloads only what changed")
	fl.BoolVar(&f.referrers, "with-referrers", false, "also export cosign signatures, attestations and SBOMs (sha256-<digest>.sig/.att/.sbom tags)")
	fl.StringVar(&f.since, "since", "", "write a delta: leave out what PREVIOUS (a bundle or its ferry.json) already carried")
	fl.StringVar(&f.split, "split", "", "write volumes OUTPUT.000, .001, ... each below SIZE (e.g. 4GiB for FAT32, 700M)")
	fl.StringVar(&f.signKey, "sign-key", "", "sign the bundle with this Ed25519 private key (PEM, from ferry keygen): ferry.sig inside, OUTPUT.sig beside")
	fl.IntVar(&f.minQuota, "min-quota", 0, "stop cleanly before Docker Hub's remaining pull quota drops below N (0: off)")
	f.regFlags.register(cmd)
	return cmd
}

func runExport(cmd *cobra.Command, e *env, f *exportFlags) error {
	if len(f.files) == 0 {
		return usagef("export needs at least one mapping file (-f FILE)")
	}
	if f.output == "" && !f.dryRun {
		return usagef("export needs an output file (-o BUNDLE.tar)")
	}
	mirrors, err := parseMirrors(f.mirrors)
	if err != nil {
		return err
	}
	platforms := parsePlatforms(f.platform)
	var split int64
	if f.split != "" {
		var err error
		if split, err = parseSize(f.split); err != nil {
			return usagef("--split: %v", err)
		}
	}
	var signer bundle.Signer
	if f.signKey != "" {
		key, err := bundle.LoadPrivateKey(f.signKey)
		if err != nil {
			return usageError{fmt.Errorf("--sign-key: %w", err)}
		}
		signer = key
	}
	client, kc, pw, err := f.connect(e)
	if err != nil {
		return err
	}
	prog := newProgress(e, "export")
	sum, err := export.Run(cmd.Context(), export.Options{
		Files: f.files, Tasks: f.tasks, Output: f.output,
		Jobs: f.jobs, KeepGoing: f.keepGoing, DryRun: f.dryRun,
		Platforms: platforms, Mirrors: mirrors,
		Username: f.username, Password: pw,
		Client: client, Keychain: kc,
		CacheDir: f.cache, MinQuota: f.minQuota, Split: split, Since: f.since, WithReferrers: f.referrers,
		Progress: prog, Logger: e.logger(), FerryVersion: version,
		Signer: signer,
	})
	prog.finish()
	if errors.Is(err, export.ErrNothingNew) {
		// Not a failure: a scheduled delta export found nothing to carry.
		fmt.Fprintf(e.stderr, "%v: no bundle written\n", err)
		err = nil
	}
	if sum != nil {
		for _, w := range sum.Warnings {
			fmt.Fprintf(e.stderr, "warning: %s\n", w)
		}
		if f.json {
			if jerr := writeJSON(e.stdout, sum); jerr != nil && err == nil {
				err = jerr
			}
		} else {
			printExportSummary(e.stdout, sum)
			if signer != nil && sum.Output != "" {
				fmt.Fprintf(e.stdout, "signed: ferry.sig inside, %s.sig beside (check with: ferry verify --trust-key KEY.pub %s)\n", sum.Output, sum.Output)
			}
		}
		for _, fl := range sum.Failures {
			fmt.Fprintf(e.stderr, "failed: %s: %s\n", fl.Source, fl.Error)
		}
	}
	return err
}

func printExportSummary(w io.Writer, s *export.Summary) {
	if len(s.Images) > 0 {
		tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "SOURCE\tDIGEST\tTARGET\tTAGS\tPLATFORMS\tSIZE")
		for _, im := range s.Images {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", im.Source, shortDigest(im.Digest), im.Target,
				strings.Join(im.Tags, ","), platformsOrAll(im.Platforms), units.Bytes(im.Size))
		}
		_ = tw.Flush()
	}
	switch {
	case s.DryRun:
		fmt.Fprintf(w, "dry run: %d images, %d tags, %d unique blobs, %s (%s before deduplication); nothing transferred\n",
			len(s.Images), s.Tags, s.Blobs, units.Bytes(s.Bytes), units.Bytes(s.Logical))
		if multi := multiPlatform(s); multi > 0 {
			fmt.Fprintf(w, "note: %d multi-platform images keep their whole upstream index (same digests as upstream); --platform or a mapping's platform: narrows it (a rewritten index, new digest)\n", multi)
		}
	case s.UpToDate:
		fmt.Fprintf(w, "up to date: %s already holds these %d images, %d tags, %d unique blobs (%s); nothing written in %.1fs\n",
			s.Output, len(s.Images), s.Tags, s.Blobs, units.Bytes(s.BundleLen), s.Seconds)
		fmt.Fprintf(w, "sha256 %s  (check with: sha256sum -c %s.sha256)\n", s.SHA256, s.Output)
	case s.Output != "":
		fmt.Fprintf(w, "wrote %s: %d images, %d tags, %d unique blobs, %s (saved %s by deduplication) in %.1fs\n",
			s.Output, len(s.Images), s.Tags, s.Blobs, units.Bytes(s.BundleLen), units.Bytes(s.Logical-s.Bytes), s.Seconds)
		if len(s.Volumes) > 0 {
			fmt.Fprintf(w, "in %d volumes: %s ... %s (check with: sha256sum -c %s.sha256)\n", len(s.Volumes), s.Volumes[0], s.Volumes[len(s.Volumes)-1], s.Output)
		} else {
			fmt.Fprintf(w, "sha256 %s  (check with: sha256sum -c %s.sha256)\n", s.SHA256, s.Output)
		}
	}
	if s.Base != "" {
		fmt.Fprintf(w, "delta of bundle %s: %d blobs left to it (import that bundle first)\n", s.Base, s.BaseBlobs)
	}
	if s.ImagesUnchanged > 0 || s.BytesFromCache > 0 {
		fmt.Fprintf(w, "%d images new, %d unchanged; %s downloaded, %s from the cache\n",
			s.ImagesNew, s.ImagesUnchanged, units.Bytes(s.BytesDownloaded), units.Bytes(s.BytesFromCache))
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

func platformsOrAll(p []string) string {
	if len(p) == 0 {
		return "-"
	}
	return strings.Join(p, ",")
}

// parseSize reads a size such as 4G, 3.9GiB, 700M or 1048576. A suffix
// with "i" (KiB, MiB, GiB, TiB) is binary; without it (K, M, G, T, with or
// without B) decimal, as disk vendors count.
func parseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	num := strings.TrimRightFunc(t, func(r rune) bool { return (r < '0' || r > '9') && r != '.' })
	unit := strings.ToUpper(strings.TrimSpace(t[len(num):]))
	mult := map[string]float64{
		"": 1, "B": 1,
		"K": 1e3, "KB": 1e3, "M": 1e6, "MB": 1e6, "G": 1e9, "GB": 1e9, "T": 1e12, "TB": 1e12,
		"KI": 1 << 10, "KIB": 1 << 10, "MI": 1 << 20, "MIB": 1 << 20, "GI": 1 << 30, "GIB": 1 << 30, "TI": 1 << 40, "TIB": 1 << 40,
	}[unit]
	if mult == 0 {
		return 0, fmt.Errorf("unknown unit in %q (use K, M, G, T or KiB, MiB, GiB, TiB)", s)
	}
	v, err := strconv.ParseFloat(num, 64)
	if err != nil || v <= 0 {
		return 0, fmt.Errorf("%q is not a positive size", s)
	}
	n := int64(v * mult)
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

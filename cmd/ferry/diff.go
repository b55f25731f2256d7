package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/ferry-airgap/ferry/bundle"
	"github.com/ferry-airgap/ferry/diff"
	"github.com/ferry-airgap/ferry/internal/units"
)

// exitStatus is an error that only sets the exit status: nothing is
// printed. `ferry diff --exit-code` returns exitStatus(1) when the bundles
// differ, as `git diff --exit-code` does.
type exitStatus int

func (s exitStatus) Error() string { return fmt.Sprintf("exit status %d", int(s)) }

func newDiffCmd(e *env) *cobra.Command {
	var exitCode bool
	cmd := &cobra.Command{
		Use:   "diff OLD.tar NEW.tar",
		Short: "Show what changed between two bundles: tags added, removed and moved, new bytes",
		Example: `  # what the November bundle changes against October's
  ferry diff cloudforet-2026-10.tar cloudforet-2026-11.tar

  # for release tooling: JSON on stdout, exit 1 when they differ
  ferry diff --json --exit-code last.tar next.tar > changes.json

  # what importing a delta changes (volumes and deltas are read in place)
  ferry diff base.tar delta.tar`,
		Long: `Show what changed between two bundles: tags added, removed and moved (old
and new digest, and which layers changed), images added and removed, and the
bytes of blobs NEW brings that OLD did not hold.

A delta bundle stands for its base chain plus what it adds, so 'ferry diff
BASE.tar DELTA.tar' shows what importing the delta changes. Volumes
(BUNDLE.tar.000, ...) and deltas are read in place, nothing is extracted.

Exit status: 0 whether or not the bundles differ; with --exit-code, 1 when
they differ; 2 when a bundle cannot be read (missing, not a bundle, damaged).`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 2 {
				return usageError{fmt.Errorf("diff needs two bundles, OLD and NEW; got %d argument(s)", len(args))}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			out := cmd.OutOrStdout()
			res, err := diffBundles(cmd, args[0], args[1])
			if err != nil {
				return err // with --json, main writes the error object
			}
			if e.json {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				err = enc.Encode(res)
			} else {
				err = printDiff(out, res)
			}
			if err != nil {
				return err
			}
			if exitCode && res.Differs() {
				return exitStatus(1)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&e.json, "json", false, "print the differences as JSON (an \"error\" object on failure)")
	cmd.Flags().BoolVar(&exitCode, "exit-code", false, "exit 1 when the bundles differ (like git diff --exit-code)")
	return cmd
}

// diffBundles opens both bundles and compares them. A bundle that cannot be
// read is bad input: exit 2, so that exit 1 under --exit-code only ever
// means "they differ".
func diffBundles(cmd *cobra.Command, oldPath, newPath string) (*diff.Result, error) {
	oldB, err := bundle.Open(oldPath)
	if err != nil {
		return nil, usageError{fmt.Errorf("OLD: %w", err)}
	}
	defer oldB.Close()
	newB, err := bundle.Open(newPath)
	if err != nil {
		return nil, usageError{fmt.Errorf("NEW: %w", err)}
	}
	defer newB.Close()
	res, err := diff.Bundles(cmd.Context(), oldB, newB)
	if err != nil {
		if errors.Is(err, bundle.ErrCorrupt) || errors.Is(err, bundle.ErrUnsupported) {
			return nil, usageError{err}
		}
		return nil, err
	}
	return res, nil
}

// printDiff writes the table people read: one row per changed tag, then the
// layers of moved tags, then a summary line.
func printDiff(w io.Writer, res *diff.Result) error {
	for _, s := range []struct {
		label string
		side  diff.Side
	}{{"old", res.Old}, {"new", res.New}} {
		delta := ""
		if s.side.Base != "" {
			delta = ", delta of " + s.side.Base
		}
		fmt.Fprintf(w, "%s: %s (bundle %s, created %s%s; %d images, %d tags)\n", s.label, s.side.Path, s.side.ID, s.side.Created, delta, s.side.Images, s.side.Tags)
	}
	if !res.Differs() {
		_, err := fmt.Fprintf(w, "no differences in tags or images; %s\n", newBytesLine(res))
		return err
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TAG\tCHANGE\tOLD\tNEW\tLAYERS")
	for _, t := range res.TagsAdded {
		fmt.Fprintf(tw, "%s:%s\tadded\t-\t%s\t\n", t.Target, t.Tag, short(t.Digest))
	}
	for _, t := range res.TagsRemoved {
		fmt.Fprintf(tw, "%s:%s\tremoved\t%s\t-\t\n", t.Target, t.Tag, short(t.Digest))
	}
	for _, m := range res.TagsMoved {
		fmt.Fprintf(tw, "%s:%s\tmoved\t%s\t%s\t%s\n", m.Target, m.Tag, short(m.OldDigest), short(m.NewDigest), layerSummary(m))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, m := range res.TagsMoved {
		if len(m.LayersAdded)+len(m.LayersRemoved) == 0 {
			continue
		}
		fmt.Fprintf(w, "\nlayers of %s:%s\n", m.Target, m.Tag)
		for _, l := range m.LayersAdded {
			fmt.Fprintf(w, "  + %s  %s\n", l.Digest, units.Bytes(l.Size))
		}
		for _, l := range m.LayersRemoved {
			fmt.Fprintf(w, "  - %s  %s\n", l.Digest, units.Bytes(l.Size))
		}
	}
	_, err := fmt.Fprintf(w, "\n%d tags added, %d removed, %d moved; %d images added, %d removed; %s\n",
		len(res.TagsAdded), len(res.TagsRemoved), len(res.TagsMoved), len(res.ImagesAdded), len(res.ImagesRemoved), newBytesLine(res))
	return err
}

func newBytesLine(res *diff.Result) string {
	return fmt.Sprintf("%d new blobs (%s)", res.NewBlobs, units.Bytes(res.NewBytes))
}

func layerSummary(m diff.Move) string {
	if !m.LayersKnown {
		return "? (an image came with a delta's base)"
	}
	var added int64
	for _, l := range m.LayersAdded {
		added += l.Size
	}
	return fmt.Sprintf("+%d -%d (+%s)", len(m.LayersAdded), len(m.LayersRemoved), units.Bytes(added))
}

// short shortens a digest for the table: sha256: and 12 hex digits.
func short(d string) string {
	if alg, hex, ok := strings.Cut(d, ":"); ok && len(hex) > 12 {
		return alg + ":" + hex[:12]
	}
	return d
}

package main

import (
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/ferry-airgap/ferry/bundle"
	"github.com/ferry-airgap/ferry/chart"
	"github.com/ferry-airgap/ferry/export"
	"github.com/ferry-airgap/ferry/internal/units"
)

// inspectImage is one row of `ferry inspect`.
type inspectImage struct {
	Target         string   `json:"target"` // TARGET_PATH:TAG
	Source         string   `json:"source"`
	Digest         string   `json:"digest"`
	UpstreamDigest string   `json:"upstreamDigest,omitempty"`
	MediaType      string   `json:"mediaType"`
	Platforms      []string `json:"platforms,omitempty"`
	Size           int64    `json:"size"`
	Kind           string   `json:"kind,omitempty"` // "helm-chart" for a Helm chart
	// Chart is the chart whose rendering (or extraImages:) brought this
	// image into the bundle; see inspectChart.
	Chart string `json:"chart,omitempty"`
}

// inspectChart is a chart of the bundle and the images it brought in:
// those its templates render (or its entry's extraImages: lists) that no
// mapping-file task selects too (an image a task selects is recorded
// under that task).
type inspectChart struct {
	Name     string   `json:"name"`
	Versions []string `json:"versions"` // TARGET_PATH:TAG of the chart itself
	Images   []string `json:"images"`   // TARGET_PATH:TAG
}

// inspectHave is an inventory the bundle was cut against (export --have).
type inspectHave struct {
	ID      string `json:"id"`
	Target  string `json:"target"` // REGISTRY[/PREFIX]: the one place it may be imported
	Created string `json:"created"`
}

type inspectOutput struct {
	ID            string         `json:"id"`
	Base          string         `json:"base,omitempty"`
	Signed        bool           `json:"signed"` // carries ferry.sig (check it with verify --trust-key)
	Have          []inspectHave  `json:"have,omitempty"`
	Created       string         `json:"created"`
	FerryVersion  string         `json:"ferryVersion"`
	FormatVersion int            `json:"formatVersion"`
	Images        []inspectImage `json:"images"`
	Charts        []inspectChart `json:"charts,omitempty"`
	Tags          int            `json:"tags"`
	UniqueBlobs   int            `json:"uniqueBlobs"`
	Bytes         int64          `json:"bytes"`
	LogicalBytes  int64          `json:"logicalBytes"`
	SavedByDedup  int64          `json:"savedByDedup"`
	FileSize      int64          `json:"fileSize"`
	// Docker is what `docker load -i BUNDLE` loads (manifest.json).
	Docker *inspectDocker `json:"docker,omitempty"`
}

// inspectDocker describes the bundle's manifest.json.
type inspectDocker struct {
	Platform string              `json:"platform"` // taken from multi-platform images
	Images   int                 `json:"images"`
	Tags     int                 `json:"tags"`
	Skipped  []bundle.DockerSkip `json:"skipped,omitempty"`
	// Problem: a manifest could not be read (ferry verify says more).
	Problem string `json:"problem,omitempty"`
}

func newInspectCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "inspect BUNDLE.tar",
		Short: "Show what a bundle holds and where each image goes",
		Example: `  ferry inspect bundle.tar
  ferry inspect bundle.tar --json | jq -r '.images[].target'`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkBundles(args); err != nil {
				return err
			}
			r, err := bundle.Open(args[0])
			if err != nil {
				return err
			}
			defer r.Close()
			out := describeBundle(r)
			out.Docker = describeDocker(r)
			if e.json {
				return writeResult(e, out, nil)
			}
			tw := tabwriter.NewWriter(e.stdout, 2, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "TARGET\tSOURCE\tDIGEST\tPLATFORMS\tSIZE")
			for _, im := range out.Images {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", im.Target, im.Source, shortDigest(im.Digest), kindOrPlatforms(im.Kind, im.Platforms), units.Bytes(im.Size))
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "bundle %s (format %d, ferry %s, created %s)\n", out.ID, out.FormatVersion, out.FerryVersion, out.Created)
			if out.Base != "" {
				fmt.Fprintf(e.stdout, "delta of bundle %s\n", out.Base)
			}
			for _, h := range out.Have {
				fmt.Fprintf(e.stdout, "cut against inventory %s of %s (taken %s): import only into %s\n", h.ID, h.Target, h.Created, h.Target)
			}
			for _, c := range out.Charts {
				images := "no image of its own"
				if len(c.Images) > 0 {
					images = plural(len(c.Images), "image") + ": " + strings.Join(c.Images, ", ")
				}
				fmt.Fprintf(e.stdout, "chart %s (%s) brought %s\n", c.Name, strings.Join(c.Versions, ", "), images)
			}
			if out.Signed {
				fmt.Fprintln(e.stdout, "signed (ferry.sig): check with ferry verify --trust-key KEY.pub")
			} else {
				fmt.Fprintln(e.stdout, "not signed")
			}
			fmt.Fprintf(e.stdout, "%s, %s, %s, %s stored, %s saved by deduplication\n",
				plural(len(r.Record().Images), "image"), plural(out.Tags, "tag"), plural(out.UniqueBlobs, "unique blob"), units.Bytes(out.Bytes), units.Bytes(out.SavedByDedup))
			printDocker(e, out.Docker)
			return nil
		},
	}
	cmd.Flags().BoolVar(&e.json, "json", false, "print JSON (an \"error\" object on failure)")
	return cmd
}

func describeBundle(r *bundle.Reader) *inspectOutput {
	rec := r.Record()
	out := &inspectOutput{ID: rec.ID, Base: rec.Base, Created: rec.Created.Format("2006-01-02T15:04:05Z07:00"),
		FerryVersion: rec.FerryVersion, FormatVersion: rec.FormatVersion, Images: []inspectImage{}, FileSize: r.Size(),
		Signed: r.Signed()}
	for _, h := range rec.Have {
		target := h.Registry
		if h.Prefix != "" {
			target += "/" + h.Prefix
		}
		out.Have = append(out.Have, inspectHave{ID: h.ID, Target: target, Created: h.Created.Format("2006-01-02T15:04:05Z07:00")})
	}
	for _, im := range rec.Images {
		out.Tags += len(im.Tags)
		out.LogicalBytes += im.Size
		for _, t := range im.Tags {
			ii := inspectImage{Target: im.Target + ":" + t, Source: im.Source, Digest: im.Digest,
				UpstreamDigest: im.UpstreamDigest, MediaType: im.MediaType, Platforms: im.Platforms, Size: im.Size, Kind: im.Kind}
			if name, image, ok := export.ChartOfTask(im.Task); ok && image {
				ii.Chart = name
			} else if ok && im.Kind == chart.Kind {
				ii.Chart = name
			}
			out.Images = append(out.Images, ii)
		}
	}
	out.Charts = chartRelations(out.Images)
	for _, b := range rec.Blobs {
		out.UniqueBlobs++
		out.Bytes += b.Size
	}
	out.SavedByDedup = out.LogicalBytes - out.Bytes
	if out.SavedByDedup < 0 {
		out.SavedByDedup = 0
	}
	return out
}

// chartRelations groups the bundle's images by the chart that brought
// them in, charts in the order they appear.
func chartRelations(images []inspectImage) []inspectChart {
	var out []inspectChart
	idx := map[string]int{}
	get := func(name string) *inspectChart {
		i, ok := idx[name]
		if !ok {
			i = len(out)
			idx[name] = i
			out = append(out, inspectChart{Name: name, Versions: []string{}, Images: []string{}})
		}
		return &out[i]
	}
	for _, im := range images {
		if im.Chart == "" {
			continue
		}
		c := get(im.Chart)
		if im.Kind == chart.Kind {
			c.Versions = append(c.Versions, im.Target)
		} else {
			c.Images = append(c.Images, im.Target)
		}
	}
	return out
}

// describeDocker says what docker load takes from the bundle; nil when it
// has no manifest.json by choice (or predates it).
func describeDocker(r *bundle.Reader) *inspectDocker {
	if r.Record().DockerPlatform == "" {
		return nil
	}
	d := &inspectDocker{Platform: r.Record().DockerPlatform}
	images, skipped, err := r.DockerImages()
	if err != nil {
		d.Problem = err.Error()
		return d
	}
	d.Images, d.Skipped = len(images), skipped
	for _, im := range images {
		d.Tags += len(im.RepoTags)
	}
	return d
}

func printDocker(e *env, d *inspectDocker) {
	if d == nil {
		fmt.Fprintln(e.stdout, "docker load: no manifest.json (exported with --docker-platform none, or by an older ferry)")
		return
	}
	if d.Problem != "" {
		fmt.Fprintf(e.stdout, "docker load: cannot tell (%s); run ferry verify\n", d.Problem)
		return
	}
	fmt.Fprintf(e.stdout, "docker load: %s, %s (%s from multi-platform images)\n", plural(d.Images, "image"), plural(d.Tags, "tag"), d.Platform)
	for _, s := range d.Skipped {
		fmt.Fprintf(e.stdout, "  left out of docker load: %s: %s\n", s.Image, s.Reason)
	}
}

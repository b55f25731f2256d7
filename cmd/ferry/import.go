package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/ferry-airgap/ferry/internal/units"
	"github.com/ferry-airgap/ferry/mapping"
	"github.com/ferry-airgap/ferry/push"
)

type importFlags struct {
	regFlags
	to             string
	files          []string
	json           bool
	dryRun         bool
	createProjects bool
	public         bool
	trustKeys      []string
}

func newImportCmd(e *env) *cobra.Command {
	var f importFlags
	cmd := &cobra.Command{
		Use:   "import BUNDLE.tar --to REGISTRY[/PREFIX]",
		Short: "Verify a bundle and push it into Harbor or any registry (internal side)",
		Long: `Verify every blob of a bundle, then push its images to
REGISTRY/PREFIX/TARGET:TAG with the digests they had upstream.

Per image: blobs first, then child manifests, then the index, and the tags
last, so no tag ever points at an incomplete image. A blob that fails its
check stops only the images that need it. Blobs the target has are skipped,
blobs another repository of the registry has are mounted, and tags that
already point at the right digest are left alone: a second import of the
same bundle uploads nothing.

Credentials, in order: --username with --password-stdin or $FERRY_PASSWORD,
the target auth of -f mapping files, --auth-file, the docker keychain.
Single-quote Harbor robot names in a shell: --username 'robot$proj+ci'.`,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usagef("import takes one bundle file, got %d arguments", len(args))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			return runImport(cmd, e, &f, args[0])
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.to, "to", "", "target: REGISTRY[/PREFIX] (required)")
	fl.StringArrayVarP(&f.files, "file", "f", nil, "mapping file whose target auth to use (repeatable)")
	fl.BoolVar(&f.json, "json", false, "print a JSON summary on stdout")
	fl.BoolVar(&f.dryRun, "dry-run", false, "report per image: new, up to date or would move tag, and the bytes to upload; transfer nothing")
	fl.BoolVar(&f.createProjects, "create-projects", false, "Harbor: create missing projects (private unless --public)")
	fl.BoolVar(&f.public, "public", false, "with --create-projects: create the projects public")
	fl.StringArrayVar(&f.trustKeys, "trust-key", nil, "require a signature by this public key (PEM, from ferry keygen; repeatable: any may match); nothing is pushed otherwise")
	f.regFlags.register(cmd)
	return cmd
}

func runImport(cmd *cobra.Command, e *env, f *importFlags, bundlePath string) error {
	if f.to == "" {
		return usagef("import needs a target: --to REGISTRY[/PREFIX]")
	}
	tgt, err := push.ParseTarget(f.to)
	if err != nil {
		return usageError{err}
	}
	if f.public && !f.createProjects {
		return usagef("--public applies to projects created with --create-projects")
	}
	keys, err := loadTrustKeys(f.trustKeys)
	if err != nil {
		return err
	}
	logins, warnings, err := mapping.LoadTargetLogins(tgt.Registry, f.files...)
	if err != nil {
		return err
	}
	client, kc, pw, err := f.connect(e)
	if err != nil {
		return err
	}
	vprog := newProgress(e, "verify")
	prog := newProgress(e, "import")
	sum, err := push.Run(cmd.Context(), push.Options{
		Bundle: bundlePath, To: f.to, Jobs: f.jobs, DryRun: f.dryRun,
		CreateProjects: f.createProjects, Public: f.public,
		Username: f.username, Password: pw, Logins: logins, Warnings: warnings,
		Client: client, Keychain: kc,
		VerifyProgress: vprog, Progress: prog, Logger: e.logger(),
		TrustKeys: keys,
	})
	vprog.finish()
	prog.finish()
	if sum != nil {
		for _, w := range sum.Warnings {
			fmt.Fprintf(e.stderr, "warning: %s\n", w)
		}
		if f.json {
			if jerr := writeJSON(e.stdout, sum); jerr != nil && err == nil {
				err = jerr
			}
		} else if len(sum.Images) > 0 {
			printImportSummary(e.stdout, sum)
		}
		for _, fl := range sum.Failures {
			fmt.Fprintf(e.stderr, "failed: %s: %s\n", fl.Image, fl.Error)
		}
	}
	return err
}

func printImportSummary(w io.Writer, s *push.Summary) {
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "REPOSITORY\tTAGS\tDIGEST\tSTATUS\tUPLOAD")
	for _, im := range s.Images {
		var tags []string
		for _, t := range im.Tags {
			switch {
			case t.Previous != "":
				tags = append(tags, fmt.Sprintf("%s (%s %s → %s)", t.Tag, t.Status, shortDigest(t.Previous), shortDigest(im.Digest)))
			case t.Status != push.TagPushed && t.Status != push.TagNew:
				tags = append(tags, fmt.Sprintf("%s (%s)", t.Tag, t.Status))
			default:
				tags = append(tags, t.Tag)
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", im.Repository, strings.Join(tags, ","), shortDigest(im.Digest), im.Status, units.Bytes(im.Upload))
	}
	_ = tw.Flush()
	if s.DryRun {
		fmt.Fprintf(w, "dry run into %s: %d images to push, %d up to date, %d would fail; %s to upload, %s to mount, %s already there; nothing transferred\n",
			s.Target, s.Pushed, s.UpToDate, s.Failed, units.Bytes(s.BytesToUpload), units.Bytes(s.BytesMounted), units.Bytes(s.BytesSkipped))
		return
	}
	fmt.Fprintf(w, "imported into %s: %d images pushed, %d up to date, %d failed; uploaded %s in %d blobs, mounted %d blobs (%s), skipped %d blobs (%s) in %.1fs\n",
		s.Target, s.Pushed, s.UpToDate, s.Failed, units.Bytes(s.BytesUploaded), s.BlobsUploaded,
		s.BlobsMounted, units.Bytes(s.BytesMounted), s.BlobsSkipped, units.Bytes(s.BytesSkipped), s.Seconds)
	if len(s.ProjectsCreated) > 0 {
		fmt.Fprintf(w, "created Harbor projects: %s\n", strings.Join(s.ProjectsCreated, ", "))
	}
}

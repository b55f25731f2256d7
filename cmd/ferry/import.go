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

	"github.com/ferry-airgap/ferry/internal/units"
	"github.com/ferry-airgap/ferry/mapping"
	"github.com/ferry-airgap/ferry/push"
)

type importFlags struct {
	regFlags
	to             string
	files          []string
	dryRun         bool
	createProjects bool
	public         bool
	trustKeys      []string
	strict         bool
}

func newImportCmd(e *env, runF func(context.Context, push.Options) (*push.Summary, error)) *cobra.Command {
	if runF == nil {
		runF = push.Run
	}
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
Single-quote Harbor robot names in a shell: --username 'robot$proj+ci'.

A bundle cut against an inventory (export --have) counts on the target to
still hold what the inventory claimed. When some of it is gone (a tag moved,
a blob deleted), only the images that depend on it fail (kind
stale-inventory), each named with what is missing; the others are pushed,
and the message lists what to carry back. --strict refuses the whole bundle
instead, before anything is pushed.

A missing bundle file or a malformed --to (a port outside 1-65535, an empty
or invalid path component) is refused with exit 2 before any request.`,
		Example: `  # what would move, without transferring anything
  ferry import bundle.tar --to harbor.internal/mirror --dry-run

  # push, creating missing Harbor projects; the password from a file
  ferry import bundle.tar --to harbor.internal --create-projects \
      --username 'robot$mirror+ci' --password-stdin < robot-token.txt

  # only a bundle signed with the export side's key
  ferry import bundle.tar --to harbor.internal --trust-key ferry.pub`,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usagef("import takes one bundle file, got %d arguments", len(args))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			return runImport(cmd, e, &f, args[0], runF)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.to, "to", "", "target: REGISTRY[/PREFIX] (required)")
	fl.StringArrayVarP(&f.files, "file", "f", nil, "mapping file whose target auth to use (repeatable)")
	fl.BoolVar(&e.json, "json", false, "print a JSON summary on stdout (with an \"error\" object on failure)")
	fl.BoolVar(&f.dryRun, "dry-run", false, "report per image: new, up to date or would move tag, and the bytes to upload; transfer nothing")
	fl.BoolVar(&f.createProjects, "create-projects", false, "Harbor: create missing projects (private unless --public)")
	fl.BoolVar(&f.public, "public", false, "with --create-projects: create the projects public")
	fl.BoolVar(&f.strict, "strict", false, "a bundle cut against an inventory (export --have): refuse it whole, before anything is pushed, when the target lacks anything the inventory claimed (default: push every image whose own claims hold, fail the others)")
	fl.StringArrayVar(&f.trustKeys, "trust-key", nil, "require a signature by this public key (PEM, from ferry keygen; repeatable: any may match); nothing is pushed otherwise")
	f.regFlags.register(cmd)
	return cmd
}

func runImport(cmd *cobra.Command, e *env, f *importFlags, bundlePath string, runF func(context.Context, push.Options) (*push.Summary, error)) error {
	o, cleanup, err := importOptions(e, f, bundlePath)
	defer cleanup()
	if err != nil {
		return err
	}
	vprog := newProgress(e, "verify")
	prog := newProgress(e, "import")
	o.VerifyProgress, o.Progress = vprog, prog
	sum, err := runF(cmd.Context(), o)
	vprog.finish()
	prog.finish()
	done, err := resultHead(cmd, e, sum, err, func(s *push.Summary) (warnings, failed []string) {
		return s.Warnings, importFailures(s, err)
	})
	if done {
		return err
	}
	if len(sum.Images) > 0 {
		printImportSummary(e.stdout, sum)
	}
	return err
}

// importOptions turns the flags into push.Options, checking everything
// that can be checked before any request.
func importOptions(e *env, f *importFlags, bundlePath string) (push.Options, func(), error) {
	none := func() {}
	if f.to == "" {
		return push.Options{}, none, usagef("import needs a target: --to REGISTRY[/PREFIX]")
	}
	if err := checkTarget(f.to); err != nil {
		return push.Options{}, none, err
	}
	if f.public && !f.createProjects {
		return push.Options{}, none, usagef("--public applies to projects created with --create-projects")
	}
	if f.passwordStdin && slices.Contains(f.files, "-") {
		return push.Options{}, none, usagef("-f - and --password-stdin both read standard input; give the password in $FERRY_PASSWORD")
	}
	if err := checkBundles([]string{bundlePath}); err != nil {
		return push.Options{}, none, err
	}
	if err := checkInputs(f.files, "mapping file"); err != nil {
		return push.Options{}, none, err
	}
	keys, err := loadTrustKeys(f.trustKeys)
	if err != nil {
		return push.Options{}, none, err
	}
	o := push.Options{
		Bundle: bundlePath, To: f.to, Jobs: f.jobs, DryRun: f.dryRun,
		CreateProjects: f.createProjects, Public: f.public,
		Username: f.username, Logger: e.logger(), TrustKeys: keys, Strict: f.strict,
	}
	files, cleanup, err := stdinFiles(e, f.files)
	if err != nil {
		return o, cleanup, err
	}
	tgt, err := push.ParseTarget(f.to)
	if err != nil {
		return o, cleanup, usageError{err}
	}
	// The mapping files are read once, here, for the target's logins.
	if o.Logins, o.Warnings, err = mapping.LoadTargetLogins(tgt.Registry, files...); err != nil {
		return o, cleanup, err
	}
	if o.Client, o.Keychain, o.Password, err = f.connect(e); err != nil {
		return o, cleanup, err
	}
	return o, cleanup, nil
}

func printImportSummary(w io.Writer, s *push.Summary) {
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "REPOSITORY\tTAGS\tDIGEST\tSTATUS\tUPLOAD")
	for _, im := range s.Images {
		// Moved tags first: when the cell shows only the first few, the
		// moves are what must not be hidden.
		var moved, tags []string
		for _, t := range im.Tags {
			switch {
			case t.Previous != "":
				moved = append(moved, fmt.Sprintf("%s (%s %s → %s)", t.Tag, t.Status, shortDigest(t.Previous), shortDigest(im.Digest)))
			case t.Status != push.TagPushed && t.Status != push.TagNew:
				tags = append(tags, fmt.Sprintf("%s (%s)", t.Tag, t.Status))
			default:
				tags = append(tags, t.Tag)
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", im.Repository, tagList(append(moved, tags...)), shortDigest(im.Digest), im.Status, units.Bytes(im.Upload))
	}
	_ = tw.Flush()
	if s.DryRun {
		fmt.Fprintf(w, "dry run into %s: %s to push, %d up to date, %d would fail; %s to upload, %s to mount, %s already there; nothing transferred\n",
			s.Target, plural(s.Pushed, "image"), s.UpToDate, s.Failed, units.Bytes(s.BytesToUpload), units.Bytes(s.BytesMounted), units.Bytes(s.BytesSkipped))
		return
	}
	fmt.Fprintf(w, "imported into %s: %s pushed, %d up to date, %d failed; uploaded %s in %s, mounted %s (%s), skipped %s (%s) in %.1fs\n",
		s.Target, plural(s.Pushed, "image"), s.UpToDate, s.Failed, units.Bytes(s.BytesUploaded), plural(s.BlobsUploaded, "blob"),
		plural(s.BlobsMounted, "blob"), units.Bytes(s.BytesMounted), plural(s.BlobsSkipped, "blob"), units.Bytes(s.BytesSkipped), s.Seconds)
	if len(s.ProjectsCreated) > 0 {
		fmt.Fprintf(w, "created Harbor projects: %s\n", strings.Join(s.ProjectsCreated, ", "))
	}
}

// importFailures are the lines that name the failed images: one per image,
// but one per Harbor policy refusal however many images it stopped, and
// none for the refusal that is the run's error (it is said there).
func importFailures(s *push.Summary, err error) []string {
	var failed []string
	for _, fl := range s.Failures {
		if fl.Refusal == "" {
			failed = append(failed, fl.Image+": "+fl.Error)
		}
	}
	var refused *push.RefusalError
	if errors.As(err, &refused) && len(s.Refusals) == 1 {
		return failed
	}
	for _, r := range s.Refusals {
		failed = append(failed, r.Message+" (hint: "+r.Hint+")")
	}
	return failed
}

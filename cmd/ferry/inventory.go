package main

import (
	"fmt"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/ferry-airgap/ferry/bundle"
	"github.com/ferry-airgap/ferry/inventory"
	"github.com/ferry-airgap/ferry/mapping"
	"github.com/ferry-airgap/ferry/push"
)

type inventoryFlags struct {
	regFlags
	files   []string
	tasks   []string
	to      string
	output  string
	signKey string
}

// inventorySummary is what `ferry inventory --json` prints.
type inventorySummary struct {
	Output       string  `json:"output"`
	ID           string  `json:"id"`
	Target       string  `json:"target"`
	Repositories int     `json:"repositories"`
	Missing      int     `json:"missingRepositories"` // selected but absent from the registry
	Tags         int     `json:"tags"`
	Manifests    int     `json:"manifests"`
	Blobs        int     `json:"blobs"`
	Bytes        int     `json:"bytes"` // size of the inventory file
	Signed       bool    `json:"signed"`
	Seconds      float64 `json:"seconds"`
}

func newInventoryCmd(e *env) *cobra.Command {
	var f inventoryFlags
	cmd := &cobra.Command{
		Use:   "inventory -f MAPPINGS.yaml [-f MORE.yaml] --to REGISTRY[/PREFIX] -o have.json",
		Short: "Record what the internal registry holds for a selection (internal side)",
		Long: `Record which tags the selection's target repositories hold at
REGISTRY/PREFIX, with their digests, and the digests of every manifest,
config and layer those images reference. Only manifests are read (one tag
list per repository, one HEAD per tag, one GET per distinct manifest); no
blob is downloaded. The file holds no credentials: carry it out and give it
to 'ferry export --have', which then leaves out what the registry holds.

--sign-key signs it (have.json.sig beside it); export checks it with
--trust-key.`,
		Example: `  # inside: what harbor.internal holds of the selection, signed with the site's key
  ferry inventory -f dregsy-spaceone-core.yaml --to harbor.internal -o have.json --sign-key site.key

  # outside: a bundle of exactly what the inside lacks
  ferry export -f dregsy-spaceone-core.yaml --have have.json --trust-key site.key.pub -o update.tar`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runInventory(cmd, e, &f) },
	}
	fl := cmd.Flags()
	fl.StringArrayVarP(&f.files, "file", "f", nil, "mapping file in dregsy format (repeatable; merged)")
	fl.StringArrayVar(&f.tasks, "task", nil, "only this task (repeatable)")
	fl.StringVar(&f.to, "to", "", "the registry the selection was imported into: REGISTRY[/PREFIX] (required)")
	fl.StringVarP(&f.output, "output", "o", "", "inventory file to write (required)")
	fl.BoolVar(&e.json, "json", false, "print a JSON summary on stdout (with an \"error\" object on failure)")
	fl.StringVar(&f.signKey, "sign-key", "", "sign the inventory with this Ed25519 private key (PEM, from ferry keygen): OUTPUT.sig beside it")
	f.regFlags.register(cmd)
	return cmd
}

func runInventory(cmd *cobra.Command, e *env, f *inventoryFlags) error {
	start := time.Now()
	switch {
	case len(f.files) == 0:
		return usagef("inventory needs at least one mapping file (-f FILE)")
	case f.to == "":
		return usagef("inventory needs the registry: --to REGISTRY[/PREFIX]")
	case f.output == "":
		return usagef("inventory needs an output file (-o have.json)")
	}
	if err := checkTarget(f.to); err != nil {
		return err
	}
	tgt, err := push.ParseTarget(f.to)
	if err != nil {
		return usageError{err}
	}
	if err := checkInputs(f.files, "mapping file"); err != nil {
		return err
	}
	for _, in := range append(append([]string(nil), f.files...), f.signKey) {
		if in != "" && sameFile(in, f.output) {
			return usagef("-o %s would overwrite the input %s", f.output, in)
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
	logins, warnings, err := mapping.LoadTargetLogins(tgt.Registry, f.files...)
	if err != nil {
		return err
	}
	for _, w := range warnings {
		fmt.Fprintf(e.stderr, "warning: %s\n", w)
	}
	client, kc, pw, err := f.connect(e)
	if err != nil {
		return err
	}
	inv, err := inventory.Take(cmd.Context(), inventory.Options{
		Files: f.files, Tasks: f.tasks, To: f.to,
		Username: f.username, Password: pw, Logins: logins,
		Client: client, Keychain: kc, Jobs: f.jobs,
		Logger: e.logger(), FerryVersion: buildVersion(),
	})
	var data []byte
	if err == nil {
		data, err = inventory.Write(f.output, inv, signer)
	}
	if err != nil {
		if e.json {
			return writeResult(e, struct{}{}, err)
		}
		return err
	}
	sum := summarizeInventory(inv, f.output, len(data), signer != nil, time.Since(start))
	if e.json {
		return writeResult(e, sum, nil)
	}
	fmt.Fprintf(e.stdout, "wrote %s: inventory %s of %s: %d repositories (%d not there yet), %d tags, %d manifests, %d blobs in %.1fs\n",
		sum.Output, sum.ID, sum.Target, sum.Repositories, sum.Missing, sum.Tags, sum.Manifests, sum.Blobs, sum.Seconds)
	if sum.Signed {
		fmt.Fprintf(e.stdout, "signed: %s.sig beside it (check with: ferry export --have %s --trust-key KEY.pub)\n", f.output, f.output)
	}
	return nil
}

func summarizeInventory(inv *inventory.Inventory, out string, size int, signed bool, took time.Duration) inventorySummary {
	s := inventorySummary{Output: out, ID: inv.ID, Target: inv.Target(), Repositories: len(inv.Repositories),
		Bytes: size, Signed: signed, Seconds: took.Seconds()}
	manifests, blobs := map[string]bool{}, map[string]bool{}
	for _, r := range inv.Repositories {
		if len(r.Tags) == 0 {
			s.Missing++
		}
		s.Tags += len(r.Tags)
		for _, d := range r.Manifests {
			manifests[d] = true
		}
		for _, d := range r.Blobs {
			blobs[d] = true
		}
	}
	s.Manifests, s.Blobs = len(manifests), len(blobs)
	return s
}

// sameFile reports whether a and b name the same file (or the same path,
// when b does not exist yet).
func sameFile(a, b string) bool {
	pa, err1 := filepath.Abs(a)
	pb, err2 := filepath.Abs(b)
	return err1 == nil && err2 == nil && pa == pb
}

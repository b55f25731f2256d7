package main

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/ferry-airgap/ferry/bundle"
	"github.com/ferry-airgap/ferry/internal/units"
)

func newVerifyCmd(e *env) *cobra.Command {
	var jobs int
	var trustKeys []string
	var deep deepFlags
	cmd := &cobra.Command{
		Use:   "verify BUNDLE.tar",
		Short: "Check a bundle's structure and every blob's digest (no network)",
		Long: `Check a bundle's structure and every blob's digest, without any network.

With --trust-key, the bundle must also be signed (ferry export --sign-key)
by one of the trusted keys; an unsigned bundle or a bad signature is refused
before any blob is read.

With --deep, every layer is also decompressed (gzip, zstd or plain tar,
told by its first bytes as docker and containerd do) and its content
checked against the diff_id its image config lists: a layer that passes
every registry but would fail when containerd or docker unpacks it is
found here. Layers are read once for both checks, in parallel (--jobs).
A layer that decompresses to more than --deep-max-ratio times its size
(beyond 16 MiB) or to more than --deep-max-size is refused as a
decompression bomb.`,
		Example: `  # on either side of the gap, after copying
  ferry verify bundle.tar

  # also require the export side's signature
  ferry verify --trust-key ferry.pub bundle.tar

  # also decompress every layer and check it against its diff_id
  ferry verify --deep bundle.tar`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			lim, err := deep.limits(cmd)
			if err != nil {
				return err
			}
			return runVerify(cmd, e, args[0], jobs, trustKeys, lim)
		},
	}
	cmd.Flags().BoolVar(&e.json, "json", false, "print JSON (with an \"error\" object on failure)")
	cmd.Flags().IntVar(&jobs, "jobs", 0, "parallel hashing (default: one per CPU)")
	cmd.Flags().StringArrayVar(&trustKeys, "trust-key", nil, "require a signature by this public key (PEM, from ferry keygen; repeatable: any may match)")
	deep.register(cmd, "also decompress every layer and check it against its image config's diff_id")
	return cmd
}

func runVerify(cmd *cobra.Command, e *env, path string, jobs int, trustKeys []string, deep *bundle.DeepLimits) error {
	keys, err := loadTrustKeys(trustKeys)
	if err != nil {
		return err
	}
	if err := checkBundles([]string{path}); err != nil {
		return err
	}
	r, err := bundle.Open(path)
	if err != nil {
		return err
	}
	defer r.Close()
	var signer bundle.TrustedKey
	if len(keys) > 0 {
		if signer, err = r.CheckSignature(keys); err != nil {
			return err
		}
	}
	prog := newProgress(e, "verify")
	var rep *bundle.Report
	if deep != nil {
		rep, err = bundle.VerifyDeep(cmd.Context(), r, jobs, *deep, prog)
	} else {
		rep, err = bundle.Verify(cmd.Context(), r, jobs, prog)
	}
	prog.finish()
	if errors.Is(err, bundle.ErrVerify) {
		err = fmt.Errorf("%s: %w", path, err)
	}
	if rep == nil || cmd.Context().Err() != nil {
		return err
	}
	if signer.Name != "" {
		rep.SignedBy = signer.Name
	}
	switch {
	case e.json:
		return writeResult(e, rep, err)
	case rep.OK():
		fmt.Fprintf(e.stdout, "OK: %s, %s, %s, %s verified\n", plural(rep.Images, "image"), plural(rep.Tags, "tag"), plural(rep.Blobs, "blob"), units.Bytes(rep.Bytes))
		if rep.Deep {
			fmt.Fprintf(e.stdout, "deep: %s decompressed (%s) and matched their diff_ids\n", plural(rep.Layers, "layer"), units.Bytes(rep.Uncompressed))
		}
		switch {
		case signer.Name != "":
			fmt.Fprintf(e.stdout, "signed by %s (key id sha256:%s)\n", signer.Name, signer.ID())
		case r.Signed():
			fmt.Fprintf(e.stdout, "signed, signature not checked (give --trust-key KEY.pub)\n")
		}
	default:
		bomb := false
		for _, p := range rep.Problems {
			fmt.Fprintln(e.stdout, p.String())
			bomb = bomb || errors.Is(p.Err, bundle.ErrBomb)
		}
		if bomb {
			fmt.Fprintln(e.stdout, deepNote(deep))
		}
	}
	return err
}

// loadTrustKeys reads --trust-key files; an unreadable or invalid key file
// is bad input (exit 2).
func loadTrustKeys(paths []string) ([]bundle.TrustedKey, error) {
	var keys []bundle.TrustedKey
	for _, p := range paths {
		k, err := bundle.LoadPublicKey(p)
		if err != nil {
			return nil, usageError{fmt.Errorf("--trust-key: %w", err)}
		}
		keys = append(keys, k)
	}
	return keys, nil
}

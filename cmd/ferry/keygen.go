package main

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/ferry-airgap/ferry/bundle"
	"github.com/ferry-airgap/ferry/internal/atomicfile"
)

func newKeygenCmd(e *env) *cobra.Command {
	var out string
	var force bool
	cmd := &cobra.Command{
		Use:   "keygen -o KEY",
		Short: "Make an Ed25519 key pair to sign bundles or inventories (--sign-key KEY, --trust-key KEY.pub)",
		Long: `Write a new Ed25519 private key to KEY (PKCS#8 PEM, mode 0600) and its public
key to KEY.pub (PKIX PEM). Keep KEY on the side that signs; carry KEY.pub
once, by a channel you trust, to the side that checks:

  bundles:     KEY stays on the export side (ferry export --sign-key KEY);
               KEY.pub goes inside (ferry verify/import --trust-key KEY.pub)
  inventories: KEY stays inside (ferry inventory --sign-key KEY);
               KEY.pub goes out (ferry export --have ... --trust-key KEY.pub)

Use one key pair per direction.

Both files are what openssl reads and writes: the signature of a bundle can
also be checked with 'openssl pkeyutl -verify -pubin -inkey KEY.pub -rawin ...'
(see docs/signing.md).`,
		Example: `  # bundles: sign outside, check inside
  ferry keygen -o ferry.key
  ferry export -f images.yaml -o bundle.tar --sign-key ferry.key
  ferry import bundle.tar --to harbor.internal --trust-key ferry.key.pub

  # inventories: sign inside, check outside
  ferry keygen -o site.key
  ferry inventory -f images.yaml --to harbor.internal -o have.json --sign-key site.key
  ferry export -f images.yaml -o update.tar --have have.json --trust-key site.key.pub`,
		Args: cobra.NoArgs,
		RunE: func(_ *cobra.Command, _ []string) error {
			if out == "" {
				return usagef("keygen needs an output file (-o KEY)")
			}
			return runKeygen(e, out, force)
		},
	}
	cmd.Flags().StringVarP(&out, "output", "o", "", "private key file to write; the public key goes to FILE.pub")
	cmd.Flags().BoolVar(&force, "force", false, "overwrite existing key files")
	return cmd
}

func runKeygen(e *env, out string, force bool) error {
	pubPath := out + ".pub"
	if !force {
		for _, p := range []string{out, pubPath} {
			if _, err := os.Lstat(p); err == nil {
				return usagef("%s exists; not overwriting a key (use --force to replace it)", p)
			} else if !errors.Is(err, os.ErrNotExist) {
				return err
			}
		}
	}
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return fmt.Errorf("generating key: %w", err)
	}
	privPEM, err := bundle.MarshalPrivateKey(priv)
	if err != nil {
		return err
	}
	pubPEM, err := bundle.MarshalPublicKey(pub)
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(out, privPEM, 0o600); err != nil {
		return fmt.Errorf("writing private key: %w", err)
	}
	if err := atomicfile.WriteFile(pubPath, pubPEM, 0o644); err != nil {
		_ = os.Remove(out)
		return fmt.Errorf("writing public key: %w", err)
	}
	fmt.Fprintf(e.stdout, "wrote %s (private: keep it on the side that signs, with --sign-key) and %s (public: carry it to the side that checks, for --trust-key)\n"+
		"key id sha256:%s\n", out, pubPath, bundle.KeyID(pub))
	return nil
}

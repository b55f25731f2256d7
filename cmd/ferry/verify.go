package main

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/ferry-airgap/ferry/bundle"
)

func newVerifyCmd(e *env) *cobra.Command {
	var asJSON bool
	var jobs int
	cmd := &cobra.Command{
		Use:   "verify BUNDLE.tar",
		Short: "Check a bundle's structure and every blob's digest (no network)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := bundle.Open(args[0])
			if err != nil {
				return err
			}
			defer r.Close()
			prog := newProgress(e, "verify")
			rep, err := bundle.Verify(cmd.Context(), r, jobs, prog)
			prog.finish()
			if rep == nil {
				return err
			}
			if asJSON {
				if jerr := writeJSON(e.stdout, rep); jerr != nil {
					return jerr
				}
			} else if rep.OK() {
				fmt.Fprintf(e.stdout, "OK: %d images, %d tags, %d blobs, %s verified\n", rep.Images, rep.Tags, rep.Blobs, humanBytes(rep.Bytes))
			} else {
				for _, p := range rep.Problems {
					fmt.Fprintln(e.stdout, p.String())
				}
			}
			if errors.Is(err, bundle.ErrVerify) {
				return fmt.Errorf("%s: %w", args[0], err)
			}
			return err
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.Flags().IntVar(&jobs, "jobs", 0, "parallel hashing (default: one per CPU)")
	return cmd
}

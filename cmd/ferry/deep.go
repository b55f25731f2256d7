package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/ferry-airgap/ferry/bundle"
	"github.com/ferry-airgap/ferry/internal/units"
)

// deepFlags are --deep and its limits, shared by verify and export.
type deepFlags struct {
	deep     bool
	maxRatio int64
	maxSize  string
}

func (f *deepFlags) register(cmd *cobra.Command, what string) {
	fl := cmd.Flags()
	fl.BoolVar(&f.deep, "deep", false, what)
	fl.Int64Var(&f.maxRatio, "deep-max-ratio", bundle.DefaultDeepMaxRatio, "with --deep: refuse a layer that decompresses to more than N times its compressed size (below 16 MiB of output, no ratio applies)")
	fl.StringVar(&f.maxSize, "deep-max-size", units.Bytes(bundle.DefaultDeepMaxSize), "with --deep: refuse a layer that decompresses to more than SIZE")
}

// limits returns the limits, or nil without --deep; a bad value is a
// usage error.
func (f *deepFlags) limits(cmd *cobra.Command) (*bundle.DeepLimits, error) {
	if !f.deep {
		for _, n := range []string{"deep-max-ratio", "deep-max-size"} {
			if cmd.Flags().Changed(n) {
				return nil, usagef("--%s needs --deep", n)
			}
		}
		return nil, nil
	}
	size, err := units.ParseBytes(f.maxSize)
	if err != nil || size < 1 {
		return nil, usagef("--deep-max-size %q: want a size such as 64GiB", f.maxSize)
	}
	if f.maxRatio < 1 {
		return nil, usagef("--deep-max-ratio %d: want a whole number of at least 1", f.maxRatio)
	}
	return &bundle.DeepLimits{MaxRatio: f.maxRatio, MaxSize: size}, nil
}

// deepNote is printed under a deep check's problems when a layer went
// beyond the limits.
func deepNote(lim *bundle.DeepLimits) string {
	return fmt.Sprintf("note: a layer went beyond --deep-max-ratio %d or --deep-max-size %s; if it is legitimate, raise them", lim.MaxRatio, units.Bytes(lim.MaxSize))
}

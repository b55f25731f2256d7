package main

import (
	"errors"

	"github.com/spf13/cobra"

	"github.com/ferry-airgap/ferry/bundle"
	"github.com/ferry-airgap/ferry/serve"
)

type mirrorsFlags struct {
	registry    string
	prefix      string
	sourceNames bool
	name        string
}

func newMirrorsCmd(e *env) *cobra.Command {
	var f mirrorsFlags
	cmd := &cobra.Command{
		Use:   "mirrors BUNDLE.tar [MORE.tar...] --registry HOST[:PORT]",
		Short: "Print client mirror configs that send upstream pulls to the internal registry",
		Long: `Print, for the images in the bundles, the client configuration that makes
pulls of their upstream names go to the internal registry HOST:

  - containerd hosts.toml files, one per upstream registry, each headed by
    the path it belongs at (/etc/containerd/certs.d/<upstream>/hosts.toml);
  - a Docker daemon.json registry-mirrors hint (Docker Hub images only);
  - a registries.conf drop-in (Podman, CRI-O, skopeo) with the same
    mirrors;
  - an OpenShift ImageDigestMirrorSet mapping each source repository to
    HOST/<target path>;
  - for each Helm chart in the bundles, a values-airgap.yaml fragment that
    points the image keys its values.yaml has at HOST.

Use --prefix and --source-names as given to 'ferry serve' (or --prefix for
the path 'ferry import --to' pushed under; --registry HOST/PATH says the
same, as --to does).`,
		Example: `  # after 'ferry import bundle.tar --to harbor.internal/mirror'
  ferry mirrors bundle.tar --registry harbor.internal/mirror`,
		Args: bundleArgs("mirrors"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if f.registry == "" {
				return usagef("mirrors needs --registry HOST[:PORT][/PATH]: the registry clients should pull from")
			}
			if err := checkBundles(args); err != nil {
				return err
			}
			var recs []*bundle.Record
			readers := map[*bundle.Record]*bundle.Reader{} // to read charts' values
			for _, p := range args {
				if r, err := bundle.Open(p); err == nil {
					defer r.Close()
					recs = append(recs, r.Record())
					readers[r.Record()] = r
					continue
				}
				rec, err := bundle.ReadRecord(p)
				if err != nil {
					return err
				}
				recs = append(recs, rec)
			}
			ms, err := serve.Mirrors(recs, serve.MirrorOptions{Registry: f.registry, Prefix: f.prefix, SourceNames: f.sourceNames, Name: f.name,
				ChartArchive: serve.ChartArchiveFrom(readers)})
			if errors.Is(err, serve.ErrMirrorOptions) {
				return usageError{err}
			}
			if err != nil {
				return err
			}
			return ms.Write(e.stdout)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.registry, "registry", "", "registry clients pull from: HOST[:PORT][/PATH] (https) or http://HOST[:PORT][/PATH]")
	fl.StringVar(&f.prefix, "prefix", "", "leading path the images sit under on that registry")
	fl.BoolVar(&f.sourceNames, "source-names", false, "the registry is 'ferry serve --source-names'")
	fl.StringVar(&f.name, "name", "", "metadata.name of the ImageDigestMirrorSet (default ferry-<bundle id>)")
	return cmd
}

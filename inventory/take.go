package inventory

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/ferry-airgap/ferry/internal/registry"
	"github.com/ferry-airgap/ferry/mapping"
	"github.com/ferry-airgap/ferry/push"
)

// Options configure Take. Zero values take the defaults documented per field.
type Options struct {
	Files []string // mapping files (-f), merged in order
	Tasks []string // --task; empty = every task
	// To is REGISTRY[/PREFIX]: the selection's images live at
	// REGISTRY/PREFIX/TARGET, as ferry import puts them.
	To string

	// Username and Password (--username, --password-stdin) win over every
	// other credential source; Logins are the mapping files' target auth
	// (mapping.TargetLogins), then --auth-file and the docker keychain.
	Username, Password string
	Logins             []registry.Login

	Client   *registry.Client   // required
	Keychain *registry.Keychain // required

	Jobs         int // parallel requests; default registry.DefaultJobs
	Logger       *slog.Logger
	FerryVersion string
	// Now is the clock for the inventory's creation time; nil = time.Now.
	Now func() time.Time
}

// Take records what the target registry holds for the selection's target
// repositories: every tag with its digest, and the digests of every
// manifest, config and layer those tags reference. It reads manifests
// only: one tag list per repository, one HEAD per tag, one GET per
// distinct manifest (across repositories), never a blob.
func Take(ctx context.Context, o Options) (*Inventory, error) {
	if err := o.setDefaults(); err != nil {
		return nil, err
	}
	tgt, err := push.ParseTarget(o.To)
	if err != nil {
		return nil, fmt.Errorf("%w: --to: %w", ErrInvalid, err)
	}
	targets, err := selection(&o)
	if err != nil {
		return nil, err
	}
	host, err := push.TargetHost(o.Client, o.Keychain, tgt.Registry, o.Username, o.Password, o.Logins)
	if err != nil {
		return nil, err
	}
	for _, t := range targets {
		host.Want(registry.Scope(tgt.Repository(t), registry.Pull))
	}
	if err := host.Check(ctx, registry.Scope(tgt.Repository(targets[0]), registry.Pull)); err != nil {
		return nil, fmt.Errorf("reading registry %s: %w", tgt.Registry, err)
	}
	w := &walker{host: host, tgt: tgt, seen: map[string]*walked{}}
	inv := &Inventory{FerryVersion: o.FerryVersion, Created: o.Now().UTC().Truncate(time.Second),
		Registry: tgt.Registry, Prefix: tgt.Prefix, Repositories: make([]Repository, len(targets))}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(o.Jobs)
	for i, t := range targets {
		g.Go(func() error {
			r, err := w.repository(gctx, t)
			if err != nil {
				return err
			}
			inv.Repositories[i] = *r
			o.Logger.Info("inventory", "repository", tgt.Repository(t), "tags", len(r.Tags), "blobs", len(r.Blobs))
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	canonicalize(inv)
	return inv, nil
}

// setDefaults checks o and fills in the defaults.
func (o *Options) setDefaults() error {
	if o.Client == nil || o.Keychain == nil {
		return errors.New("inventory: Client and Keychain are required")
	}
	if o.Jobs < 1 {
		o.Jobs = registry.DefaultJobs
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return nil
}

// selection returns the distinct target paths of the selected tasks'
// mappings, sorted.
func selection(o *Options) ([]string, error) {
	cfg, err := mapping.Load(o.Files...)
	if err != nil {
		return nil, err
	}
	tasks, err := cfg.Select(o.Tasks)
	if err != nil {
		return nil, err
	}
	for _, w := range cfg.Warnings() {
		o.Logger.Warn(w)
	}
	var out []string
	for _, t := range tasks {
		for _, m := range t.Mappings {
			out = append(out, m.TargetPath())
		}
	}
	slices.Sort(out)
	out = slices.Compact(out)
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: the mapping files select no repository", mapping.ErrInvalid)
	}
	return out, nil
}

// walker reads manifests, each digest once for the whole run: a manifest's
// references are the same in every repository that holds it.
type walker struct {
	host *registry.Host
	tgt  push.Target
	mu   sync.Mutex
	seen map[string]*walked
}

// walked is one manifest's references, read once.
type walked struct {
	once      sync.Once
	manifests []string // child manifests and indexes
	blobs     []string // configs and layers
	err       error
}

package static

import (
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/ferry-airgap/ferry/serve"
)

// prunedState is st without the tags the plan removes, and without the
// repositories left with no tag: what the tag lists, the catalog and
// nginx.conf describe after the prune.
func (pl *prunePlan) prunedState(st *treeState) *treeState {
	out := &treeState{repos: map[string]*treeRepo{}}
	for _, n := range st.names {
		r, k := st.repos[n], pl.kept[n]
		if k == nil {
			continue // not in the plan: it has no ferry file (scan and plan disagree on nothing else)
		}
		// Only the manifests that stay are mapped to a media type: the
		// conf is then the same whether or not a crashed run already
		// removed the others.
		nr := &treeRepo{tags: map[string]v1.Hash{}, manifests: map[v1.Hash]types.MediaType{}}
		for h, mt := range r.manifests {
			if k.manifests[h] {
				nr.manifests[h] = mt
			}
		}
		for tag, h := range r.tags {
			if k.tags[tag] {
				nr.tags[tag] = h
			}
		}
		if len(nr.tags) == 0 {
			continue
		}
		out.repos[n] = nr
		out.names = append(out.names, n)
	}
	return out
}

// removeFiles removes rels, in order; one already gone is fine (a rerun
// after a crash, or writePages took it).
func removeFiles(ctx context.Context, t *tree, rels []string) error {
	for _, rel := range rels {
		if err := ctx.Err(); err != nil {
			return err
		}
		p, err := t.abs(rel)
		if err != nil {
			return err
		}
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("%w: removing %s: %v", ErrTree, rel, err)
		}
		t.forget(rel)
	}
	return nil
}

// removeEmptyDirs removes the folders under v2/ that the removed files
// left empty, deepest first; a folder that still holds anything (a file
// ferry does not know) stays.
func removeEmptyDirs(t *tree, rels []string) {
	dirs := map[string]bool{}
	for _, rel := range rels {
		if !strings.HasPrefix(rel, "v2/") {
			continue
		}
		for d := parentOf(rel); d != "v2" && d != "."; d = parentOf(d) {
			dirs[d] = true
		}
	}
	list := sortedSet(dirs)
	// Longer paths first: children before their parents.
	for i := len(list) - 1; i >= 0; i-- {
		p, err := t.abs(list[i])
		if err != nil {
			continue
		}
		if err := os.Remove(p); err == nil {
			t.mu.Lock()
			delete(t.dirs, list[i])
			t.mu.Unlock()
		}
	}
}

// tidyJournal drops what the journal says about files and manifests the
// tree no longer holds, so that it describes only what is there.
func tidyJournal(t *tree, pl *prunePlan) {
	keptM := map[string]bool{}
	for _, k := range pl.kept {
		for h := range k.manifests {
			keptM[h.String()] = true
		}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for rel := range t.j.Files {
		if _, err := os.Lstat(filepath.Join(t.root, filepath.FromSlash(rel))); errors.Is(err, fs.ErrNotExist) {
			delete(t.j.Files, rel)
		}
	}
	for d := range t.j.MediaTypes {
		if !keptM[d] {
			delete(t.j.MediaTypes, d)
		}
	}
}

// collect removes what nothing kept references, then the folders left
// empty, and tidies the journal.
func collect(ctx context.Context, t *tree, pl *prunePlan, sum *Summary) error {
	if err := removeFiles(ctx, t, pl.gcFiles); err != nil {
		return err
	}
	removeEmptyDirs(t, append(append([]string{}, pl.tagFiles...), pl.gcFiles...))
	tidyJournal(t, pl)
	ps := pl.sum
	sum.Pruned = &ps
	return nil
}

// dryRun plans the prune and reports it; it writes and removes nothing
// (not even the journal: the lock is released without saving).
func dryRun(ctx context.Context, t *tree, contents []serve.Content, o *options, sum *Summary) error {
	defer t.release()
	pl, err := planPrune(ctx, t, contents, o.prune, heldDigests(t))
	if err != nil {
		return err
	}
	ps := pl.sum
	ps.DryRun = true
	sum.Pruned = &ps
	for _, c := range contents {
		sum.Tags += len(c.Tags)
	}
	sum.Dir = t.root
	return nil
}

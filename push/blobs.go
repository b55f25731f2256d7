package push

import (
	"context"
	"errors"
	"fmt"

	"github.com/ferry-airgap/ferry/bundle"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sync/errgroup"
)

// ensureBlob makes t's blob present in t's repository in as few requests
// as the registry allows. A blob another repository of this import holds
// (its primary's) is mounted from there: one request. Any other blob is
// asked for with a mount from its own repository, which answers 201 when
// the repository holds it already and otherwise opens the upload session
// (202) that the one PUT then completes: no HEAD before it. Only a blob a
// delta bundle leaves to its base is looked for with a HEAD.
func (p *pusher) ensureBlob(ctx context.Context, t *blobTask) error {
	rc, err := p.repo(ctx, t.repo)
	if err != nil {
		return err
	}
	if t.missing {
		return p.ensureBase(ctx, rc, t)
	}
	if t.primary != nil {
		select {
		case <-t.primary.done:
		case <-ctx.Done():
			return ctx.Err()
		}
		var de *damagedError
		if errors.As(t.primary.err, &de) {
			return t.primary.err // the bundle's copy is damaged: do not read it again
		}
		if t.primary.how == "skipped" {
			// The blob was in the target before this run (a rerun): most
			// likely in this repository too.
			if done, err := p.findOwn(ctx, rc, t); done || err != nil {
				return err
			}
		}
		if t.primary.present {
			done, err := p.mountFrom(ctx, rc, t, t.primary.repo)
			if done || err != nil {
				return err
			}
		}
	}
	return p.mountOrUpload(ctx, rc, t)
}

// findOwn asks t's repository, with a mount from itself, whether it holds
// t's blob; an upload session opened instead is cancelled (the caller
// mounts from elsewhere). done is true when the blob is there.
func (p *pusher) findOwn(ctx context.Context, rc *repoClient, t *blobTask) (bool, error) {
	mounted, loc, err := rc.mount(ctx, t.digest, t.repo)
	switch {
	case err == nil && mounted:
		p.markSkipped(t)
		return true, nil
	case err == nil && loc != "":
		rc.cancelUpload(ctx, loc)
	case err != nil && isRefusal(err):
		return true, p.refusalErr(t.project, err, 0, "")
	}
	return false, ctx.Err()
}

// mountOrUpload asks t's own repository for a mount of t's blob from
// itself: 201 means it is there already (skipped), 202 opens the upload.
// A registry that refuses the request gets a plain upload.
func (p *pusher) mountOrUpload(ctx context.Context, rc *repoClient, t *blobTask) error {
	mounted, loc, err := rc.mount(ctx, t.digest, t.repo)
	switch {
	case err == nil && mounted:
		p.markSkipped(t)
		return nil
	case err == nil && loc != "":
		return p.upload(ctx, rc, t, loc)
	case err != nil && isRefusal(err):
		return p.refusalErr(t.project, err, 0, "")
	case err != nil && ctx.Err() != nil:
		return ctx.Err()
	case err != nil:
		var pe *HarborProjectError
		if errors.As(err, &pe) {
			return err
		}
		p.o.Logger.Info("existence check by mount refused; uploading", "blob", t.digest.String(), "repository", t.repo, "error", errString(err))
	}
	loc, err = rc.startUpload(ctx)
	if err != nil {
		if isRefusal(err) {
			return p.refusalErr(t.project, err, 0, "")
		}
		return err
	}
	return p.upload(ctx, rc, t, loc)
}

// mountFrom mounts t's blob from another repository. done is false when
// the registry refused the mount (the caller uploads instead); a 202
// upload session it opened instead is used at once.
func (p *pusher) mountFrom(ctx context.Context, rc *repoClient, t *blobTask, from string) (done bool, err error) {
	mrc, err := p.mountClient(ctx, t.repo, from)
	if err != nil {
		p.o.Logger.Info("no token to mount; uploading", "blob", t.digest.String(), "from", from, "to", t.repo, "error", errString(err))
		return false, nil
	}
	mounted, loc, err := mrc.mount(ctx, t.digest, from)
	switch {
	case err == nil && mounted:
		t.present, t.how = true, "mounted"
		p.mounted.Add(t.size)
		p.nMounted.Add(1)
		return true, nil
	case err == nil && loc != "":
		// 202: the registry would not mount but opened an upload.
		return true, p.upload(ctx, rc, t, loc)
	case err != nil && isRefusal(err):
		return true, p.refusalErr(t.project, err, 0, "")
	}
	p.o.Logger.Info("mount refused; uploading", "blob", t.digest.String(), "from", from, "to", t.repo, "error", errString(err))
	return false, nil
}

// ensureBase makes a blob a delta bundle leaves to its base present: it is
// in t's repository (HEAD) or mounted from where checkBase found it.
func (p *pusher) ensureBase(ctx context.Context, rc *repoClient, t *blobTask) error {
	ok, err := rc.headBlob(ctx, t.digest)
	if err != nil {
		return err
	}
	if ok {
		p.markSkipped(t)
		return nil
	}
	if t.baseFrom == "" {
		return fmt.Errorf("not in this delta bundle and not in %s/%s: import bundle %s (its base) first", p.tgt.Registry, t.repo, p.base())
	}
	if done, err := p.mountFrom(ctx, rc, t, t.baseFrom); done || err != nil {
		return err
	}
	return fmt.Errorf("not in this delta bundle, not in %s/%s, and %s refused to mount it from %s: import bundle %s (its base) first",
		p.tgt.Registry, t.repo, p.tgt.Registry, t.baseFrom, p.base())
}

func (p *pusher) markSkipped(t *blobTask) {
	t.present, t.how = true, "skipped"
	p.skipped.Add(t.size)
	p.nSkipped.Add(1)
	p.progressDone(t)
}

func (p *pusher) upload(ctx context.Context, rc *repoClient, t *blobTask, loc string) error {
	counted := t.primary == nil
	var reported int64 // bytes of this blob already reported, across re-sends
	err := rc.putBlob(ctx, loc, t.digest, t.size, func() (readCloser, error) {
		b, err := p.src.OpenBlob(ctx, t.digest, t.size)
		if err != nil {
			return nil, err
		}
		b = bundle.HoldLast(b, t.size)
		if !counted {
			return b, nil
		}
		return &countingReader{rc: b, p: p.o.Progress, h: t.digest, reported: &reported}, nil
	})
	if err != nil && errors.Is(err, bundle.ErrCorrupt) {
		// The source's bytes failed their check as they streamed: the
		// PUT was cut before its end, so the registry committed nothing.
		if _, ok := p.src.(Verifier); ok {
			return damaged(t.digest, innermost(err, bundle.ErrCorrupt))
		}
		err = fmt.Errorf("reading from %s: %w", p.src.Name(), err)
	}
	if err != nil {
		if isRefusal(err) {
			return p.refusalErr(t.project, err, 0, "")
		}
		return err
	}
	t.present, t.how = true, "uploaded"
	p.uploaded.Add(t.size)
	p.nUploaded.Add(1)
	if counted {
		p.o.Progress.Event(bundle.Event{Kind: bundle.EventBlobDone, Digest: t.digest})
	}
	return nil
}

// innermost returns the deepest error of err's chain that still wraps
// target: the source's own message, without the request and connection
// the transport wrapped around it.
func innermost(err, target error) error {
	for {
		u := errors.Unwrap(err)
		if u == nil || !errors.Is(u, target) {
			return err
		}
		err = u
	}
}

func (p *pusher) progressDone(t *blobTask) {
	if t.primary == nil {
		p.o.Progress.Event(bundle.Event{Kind: bundle.EventBytes, Digest: t.digest, Bytes: t.size})
		p.o.Progress.Event(bundle.Event{Kind: bundle.EventBlobDone, Digest: t.digest})
	}
}

// dryRunBlobs asks the target which blobs it lacks, transferring nothing.
func (p *pusher) dryRunBlobs(ctx context.Context) error {
	p.plan()
	g := errgroup.Group{}
	g.SetLimit(p.o.Jobs)
	for _, t := range p.order {
		g.Go(func() error {
			defer close(t.done)
			if p.newProjects[t.project] {
				return nil
			}
			rc, err := p.repo(ctx, t.repo)
			if err != nil {
				t.err = err
				return nil
			}
			t.present, t.err = rc.headBlob(ctx, t.digest)
			switch {
			case t.err != nil || t.present || !t.missing:
			case t.baseFrom != "":
				t.how = "mounted" // the real import mounts it from where checkBase found it
			default:
				t.err = fmt.Errorf("not in this delta bundle and not in %s/%s: import bundle %s (its base) first", p.tgt.Registry, t.repo, p.base())
			}
			return nil
		})
	}
	_ = g.Wait()
	if err := ctx.Err(); err != nil {
		return err
	}
	somewhere := map[v1.Hash]bool{}
	for _, t := range p.order {
		if t.present {
			somewhere[t.digest] = true
		}
	}
	counted := map[v1.Hash]bool{}
	for _, t := range p.order {
		switch {
		case t.present:
			p.skipped.Add(t.size)
			p.nSkipped.Add(1)
		case t.err != nil:
		case t.how == "mounted" || somewhere[t.digest] || counted[t.digest]:
			p.mounted.Add(t.size)
			p.nMounted.Add(1)
		default:
			counted[t.digest] = true
			p.bytesToUpload += t.size
		}
	}
	for _, im := range p.live() {
		for _, t := range p.blobsOf(im) {
			if !t.present {
				im.upload += t.size
			}
			if t.err != nil {
				im.fail(t.digest.String(), fmt.Errorf("blob %s: %w", t.digest, t.err))
			}
		}
	}
	return nil
}

type readCloser interface {
	Read([]byte) (int, error)
	Close() error
}

// countingReader reports bytes as they leave the source, in steps of
// 256 KiB. A re-sent body (the transport reopens it) reports only bytes
// beyond what an earlier send of the same blob already reported.
type countingReader struct {
	rc       readCloser
	p        bundle.Progress
	h        v1.Hash
	n        int64  // bytes read by this send
	reported *int64 // bytes of the blob reported so far, shared by re-sends
}

func (c *countingReader) Read(b []byte) (int, error) {
	n, err := c.rc.Read(b)
	c.n += int64(n)
	if c.n-*c.reported >= 256<<10 || (err != nil && c.n > *c.reported) {
		c.p.Event(bundle.Event{Kind: bundle.EventBytes, Digest: c.h, Bytes: c.n - *c.reported})
		*c.reported = c.n
	}
	return n, err
}

func (c *countingReader) Close() error {
	if c.n > *c.reported {
		c.p.Event(bundle.Event{Kind: bundle.EventBytes, Digest: c.h, Bytes: c.n - *c.reported})
		*c.reported = c.n
	}
	return c.rc.Close()
}

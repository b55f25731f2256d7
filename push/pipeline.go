package push

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/ferry-airgap/ferry/bundle"
	"golang.org/x/sync/errgroup"
)

// pushAll pushes blobs and manifests under the one jobs limit. An image's
// manifests go as soon as its own blobs are in place, not after every blob
// of the import: the registry, not ferry, is the bottleneck, and a pass
// boundary leaves it waiting while the last uploads finish. A blob that
// another repository of the import uploads (its primary) is mounted once
// that upload is done; until then it takes no slot. Tags still come last
// for each image: after everything under them exists.
func (p *pusher) pushAll(ctx context.Context) error {
	p.plan()
	var total int64
	for _, t := range p.order {
		if t.primary == nil {
			total += t.size
		}
	}
	p.o.Progress.Event(bundle.Event{Kind: bundle.EventPlanned, Total: total})
	q := newWorkQueue(p)
	g := errgroup.Group{}
	for range p.o.Jobs {
		g.Go(func() error {
			for job := q.next(ctx); job != nil; job = q.next(ctx) {
				job()
			}
			return nil
		})
	}
	_ = g.Wait()
	if err := ctx.Err(); err != nil {
		return err
	}
	return nil
}

// workQueue hands the workers what can run now: an image whose blobs are
// all in place (its manifests and tags), else the next blob task in plan
// order (largest first), else a mount whose primary upload has finished.
type workQueue struct {
	p    *pusher
	mu   sync.Mutex
	cond *sync.Cond

	images []*image    // ready for their manifests
	blobs  []*blobTask // primaries, in plan order
	mounts []*blobTask // secondaries whose primary is done
	left   int         // jobs not yet handed out or not yet finished

	waiting map[*blobTask][]*blobTask // primary → its secondaries
	needs   map[*blobTask][]*image    // task → images that wait for it
	pending map[*image]int            // image → its blob tasks not done
}

func newWorkQueue(p *pusher) *workQueue {
	q := &workQueue{p: p, waiting: map[*blobTask][]*blobTask{}, needs: map[*blobTask][]*image{}, pending: map[*image]int{}}
	q.cond = sync.NewCond(&q.mu)
	for _, t := range p.order {
		if t.primary == nil {
			q.blobs = append(q.blobs, t)
		} else {
			q.waiting[t.primary] = append(q.waiting[t.primary], t)
		}
	}
	q.left = len(p.order)
	for _, im := range p.live() {
		seen := map[*blobTask]bool{}
		for _, t := range p.blobsOf(im) {
			if !seen[t] {
				seen[t] = true
				q.needs[t] = append(q.needs[t], im)
			}
		}
		q.pending[im] = len(seen)
		q.left++
		if len(seen) == 0 {
			q.images = append(q.images, im)
		}
	}
	return q
}

// next blocks until a job can run and returns it; nil when everything is
// done or ctx is cancelled.
func (q *workQueue) next(ctx context.Context) func() {
	q.mu.Lock()
	defer q.mu.Unlock()
	for {
		if ctx.Err() != nil || q.left == 0 {
			q.cond.Broadcast()
			return nil
		}
		switch {
		case len(q.images) > 0:
			im := q.images[0]
			q.images = q.images[1:]
			return func() { q.p.finishImage(ctx, im); q.finished(nil) }
		case len(q.blobs) > 0:
			t := q.blobs[0]
			q.blobs = q.blobs[1:]
			return func() { q.p.runBlob(ctx, t); q.finished(t) }
		case len(q.mounts) > 0:
			t := q.mounts[0]
			q.mounts = q.mounts[1:]
			return func() { q.p.runBlob(ctx, t); q.finished(t) }
		}
		q.cond.Wait()
	}
}

// finished records a job's end: a blob task frees its secondaries and
// the images that waited for it.
func (q *workQueue) finished(t *blobTask) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.left--
	if t != nil {
		q.mounts = append(q.mounts, q.waiting[t]...)
		for _, im := range q.needs[t] {
			if q.pending[im]--; q.pending[im] == 0 {
				q.images = append(q.images, im)
			}
		}
	}
	q.cond.Broadcast()
}

// runBlob makes one blob task's blob present and reports a failure.
func (p *pusher) runBlob(ctx context.Context, t *blobTask) {
	defer close(t.done)
	t.err = p.ensureBlob(ctx, t)
	if t.err != nil && t.primary == nil {
		p.o.Progress.Event(bundle.Event{Kind: bundle.EventBlobFailed, Digest: t.digest, Err: t.err})
	}
}

// finishImage runs once every blob of im is done: im fails with the first
// blob that failed, else its manifests and tags are pushed.
func (p *pusher) finishImage(ctx context.Context, im *image) {
	if ctx.Err() != nil {
		return
	}
	for _, t := range p.blobsOf(im) {
		if t.how == "uploaded" || t.how == "mounted" {
			im.upload += t.size
		}
		var de *damagedError
		switch {
		case errors.As(t.err, &de):
			im.fail(t.digest.String(), t.err) // names the blob already
		case t.err != nil:
			im.fail(t.digest.String(), &blobError{t.digest.String(), t.err})
		}
	}
	if im.err != nil {
		return
	}
	if err := p.pushImage(ctx, im); err != nil {
		var me *manifestError
		if errors.As(err, &me) {
			im.fail(me.digest, err)
		} else {
			im.fail("", err)
		}
	}
}

// blobError names the blob an image failed on. Its message is made when it
// is read, not when the image fails: a quota error learns how many bytes
// its project lacks only once every blob task is done.
type blobError struct {
	digest string
	err    error
}

func (e *blobError) Error() string { return fmt.Sprintf("blob %s: %v", e.digest, e.err) }
func (e *blobError) Unwrap() error { return e.err }

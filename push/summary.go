package push

import (
	"slices"
	"sort"

	"github.com/ferry-airgap/ferry/bundle"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// summarize fills the summary from the images' state.
func (p *pusher) summarize() {
	s := p.sum
	// Blobs of images that were complete already count as skipped.
	seen := map[key]bool{}
	for _, im := range p.images {
		if im.err != nil || !im.complete || im.tree == nil {
			continue
		}
		_ = im.tree.Walk(func(n *bundle.Node) error {
			k := key{im.repo, n.Digest}
			if n.Data == nil && !seen[k] && p.blobs[k] == nil {
				seen[k] = true
				p.skipped.Add(n.Size)
				p.nSkipped.Add(1)
			}
			return nil
		})
	}
	for _, im := range p.images {
		res := p.imageResult(im)
		switch res.Status {
		case StatusFailed, StatusWouldFail:
			s.Failed++
			s.Failures = append(s.Failures, failureOf(im))
		case StatusUpToDate:
			s.UpToDate++
		default:
			s.Pushed++
		}
		s.Images = append(s.Images, res)
	}
	sort.SliceStable(s.Failures, func(i, j int) bool { return s.Failures[i].Image < s.Failures[j].Image })
	s.BytesUploaded, s.BytesMounted, s.BytesSkipped = p.uploaded.Load(), p.mounted.Load(), p.skipped.Load()
	s.BlobsUploaded, s.BlobsMounted, s.BlobsSkipped = int(p.nUploaded.Load()), int(p.nMounted.Load()), int(p.nSkipped.Load())
	s.BytesToUpload = p.bytesToUpload
	if p.harbor != nil {
		s.Harbor = true
		s.ProjectsCreated = p.harbor.created
	}
	p.summarizeRefusals()
}

// imageResult says what became (or, in a dry run, would become) of im
// and of each of its tags.
func (p *pusher) imageResult(im *image) ImageResult {
	res := ImageResult{Repository: p.tgt.Registry + "/" + im.repo, Source: im.rec.Source, Digest: im.rec.Digest,
		MediaType: im.rec.MediaType, Upload: im.upload, Tags: []TagResult{}}
	upToDate, moved := 0, 0
	for i, tag := range im.rec.Tags {
		tr := TagResult{Tag: tag}
		cur := ""
		if i < len(im.current) {
			cur = im.current[i]
		}
		switch {
		case im.err != nil && cur != im.rec.Digest && (len(im.refusedTags) == 0 || slices.Contains(im.refusedTags, tag)):
			tr.Status = TagNotDone
		case cur == im.rec.Digest:
			tr.Status = TagUpToDate
			upToDate++
		case cur != "":
			tr.Previous = cur
			moved++
			tr.Status = TagMoved
			if p.o.DryRun {
				tr.Status = TagMove
			}
		default:
			tr.Status = TagPushed
			if p.o.DryRun {
				tr.Status = TagNew
			}
		}
		res.Tags = append(res.Tags, tr)
	}
	switch {
	case im.err != nil:
		res.Status = StatusFailed
		if p.o.DryRun {
			res.Status = StatusWouldFail
		}
		res.Error = im.err.Error()
	case upToDate == len(im.rec.Tags):
		res.Status = StatusUpToDate
	case p.o.DryRun && moved > 0:
		res.Status = StatusMoveTag
	case p.o.DryRun && upToDate > 0:
		res.Status = StatusAddTag
	case p.o.DryRun:
		res.Status = StatusNew
	default:
		res.Status = StatusPushed
	}
	return res
}

// stillNeeded sums the blobs of project that are not in their repository.
// A digest counts once per project: Harbor stores it once there.
func (p *pusher) stillNeeded(proj string) int64 {
	var n int64
	counted := map[v1.Hash]bool{}
	for _, t := range p.order {
		if t.project == proj && !t.present && !counted[t.digest] {
			counted[t.digest] = true
			n += t.size
		}
	}
	return n
}

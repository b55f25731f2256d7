package bundle

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/ferry-airgap/ferry/internal/oci"
)

// DockerManifestFile is the docker-save manifest a bundle carries beside
// its OCI layout, so that `docker load -i BUNDLE.tar` (Docker's classic
// image store, as in Debian's docker.io 20.10) loads the images. It points
// at the same blobs/sha256/... entries: nothing is stored twice.
const DockerManifestFile = "manifest.json"

// DefaultDockerPlatform is the platform manifest.json takes from each
// multi-platform index unless WithDockerPlatform chooses another. It is a
// constant, not the writing machine's platform, so that equal selections
// give equal bundles wherever they are written.
const DefaultDockerPlatform = "linux/amd64"

// DockerImage is one entry of manifest.json, in docker save's format.
type DockerImage struct {
	Config   string   `json:"Config"`
	RepoTags []string `json:"RepoTags"`
	Layers   []string `json:"Layers"`
}

// DockerSkip is an image manifest.json leaves out, and why.
type DockerSkip struct {
	Image  string `json:"image"` // TARGET:TAG[,TAG...]
	Reason string `json:"reason"`
}

// manifestSource gives the manifests an image tree needs and tells which
// blobs are stored: the plan when writing, the bundle when reading.
type manifestSource interface {
	manifest(h v1.Hash) ([]byte, error)
	stored(h v1.Hash) bool
}

// ParseDockerPlatform checks a --docker-platform value: os/arch[/variant],
// or "none" (returned as "") for no manifest.json.
func ParseDockerPlatform(s string) (string, error) {
	if s == "none" {
		return "", nil
	}
	if _, err := parseDockerPlatform(s); err != nil {
		return "", err
	}
	return s, nil
}

func parseDockerPlatform(s string) (v1.Platform, error) {
	parts := strings.Split(s, "/")
	ok := len(parts) == 2 || len(parts) == 3
	for _, p := range parts {
		ok = ok && p != "" && strings.Trim(p, "abcdefghijklmnopqrstuvwxyz0123456789_.-") == "" &&
			strings.Trim(p[:1], "abcdefghijklmnopqrstuvwxyz0123456789") == ""
	}
	if !ok {
		return v1.Platform{}, fmt.Errorf("docker platform %q: want os/arch[/variant], e.g. linux/amd64", clip(s))
	}
	p := v1.Platform{OS: parts[0], Architecture: parts[1]}
	if len(parts) == 3 {
		p.Variant = parts[2]
	}
	return p, nil
}

// dockerManifest is the manifest.json that rec implies, with the images it
// leaves out; nil when it has no entry (no file is written then). The
// entries follow ferry.json's image order; images whose chosen manifest is
// the same (same config and layers) share one entry.
func dockerManifest(rec *Record, src manifestSource) ([]byte, []DockerSkip, error) {
	if rec.DockerPlatform == "" {
		return nil, nil, nil
	}
	want, err := parseDockerPlatform(rec.DockerPlatform)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %s: %v", ErrCorrupt, RecordFile, err)
	}
	var out []DockerImage
	var skips []DockerSkip
	byKey := map[string]int{}
	for _, im := range rec.Images {
		name := im.Target + ":" + strings.Join(im.Tags, ",")
		h, err := ParseDigest(im.Digest)
		if err != nil {
			return nil, nil, err
		}
		e, reason, err := dockerEntry(im, h, want, src)
		if err != nil {
			return nil, nil, fmt.Errorf("image %s: %w", name, err)
		}
		if reason != "" {
			skips = append(skips, DockerSkip{Image: name, Reason: reason})
			continue
		}
		for _, t := range im.Tags {
			e.RepoTags = append(e.RepoTags, im.Target+":"+t)
		}
		key := e.Config + " " + strings.Join(e.Layers, " ")
		if i, ok := byKey[key]; ok {
			out[i].RepoTags = append(out[i].RepoTags, e.RepoTags...)
			continue
		}
		byKey[key] = len(out)
		out = append(out, e)
	}
	if len(out) == 0 {
		return nil, skips, nil
	}
	b, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		return nil, nil, err
	}
	return append(b, '\n'), skips, nil
}

// dockerEntry is the entry for image im (manifest h), or the reason it
// has none.
func dockerEntry(im Image, h v1.Hash, want v1.Platform, src manifestSource) (DockerImage, string, error) {
	if im.Kind != "" {
		return DockerImage{}, "a " + im.Kind + ", not a container image", nil
	}
	data, err := src.manifest(h)
	if err != nil {
		return DockerImage{}, "", err
	}
	mt := types.MediaType(im.MediaType)
	if oci.KindOf(mt) == oci.KindIndex {
		child, reason, err := dockerChild(data, want)
		if err != nil || reason != "" {
			return DockerImage{}, reason, err
		}
		if !src.stored(child.Digest) {
			return DockerImage{}, "its " + oci.PlatformString(child.Platform) + " manifest is not in the bundle", nil
		}
		if data, err = src.manifest(child.Digest); err != nil {
			return DockerImage{}, "", err
		}
		mt = child.MediaType
	}
	if oci.KindOf(mt) != oci.KindManifest {
		return DockerImage{}, fmt.Sprintf("manifest type %s", clip(string(mt))), nil
	}
	m, err := oci.Manifest(data)
	if err != nil {
		return DockerImage{}, "", fmt.Errorf("%w: manifest: %v", ErrCorrupt, err)
	}
	return dockerLayers(m, src)
}

// dockerChild picks the manifest of platform want from an index: the
// first child whose os and architecture match (and variant, when want
// names one).
func dockerChild(data []byte, want v1.Platform) (v1.Descriptor, string, error) {
	idx, err := oci.Index(data)
	if err != nil {
		return v1.Descriptor{}, "", fmt.Errorf("%w: index: %v", ErrCorrupt, err)
	}
	for _, c := range idx.Manifests {
		p := c.Platform
		if p == nil || p.OS != want.OS || p.Architecture != want.Architecture || (want.Variant != "" && p.Variant != want.Variant) {
			continue
		}
		if oci.KindOf(c.MediaType) != oci.KindManifest {
			return v1.Descriptor{}, fmt.Sprintf("its %s entry is not an image manifest", oci.PlatformString(&want)), nil
		}
		return c, "", nil
	}
	return v1.Descriptor{}, "no " + oci.PlatformString(&want) + " manifest in its index (choose another with --docker-platform)", nil
}

// dockerLayers is the entry of image manifest m: its config and layers,
// all stored, of types docker load unpacks (plain or gzip tar).
func dockerLayers(m *v1.Manifest, src manifestSource) (DockerImage, string, error) {
	switch m.Config.MediaType {
	case types.DockerConfigJSON, types.OCIConfigJSON:
	default:
		return DockerImage{}, "not a container image (config type " + clip(string(m.Config.MediaType)) + ")", nil
	}
	e := DockerImage{Config: BlobName(m.Config.Digest), Layers: []string{}}
	if err := checkBlobRef(m.Config.Digest); err != nil {
		return DockerImage{}, "", err
	}
	if !src.stored(m.Config.Digest) {
		return DockerImage{}, "its config is left to the base bundle or inventory", nil
	}
	for _, l := range m.Layers {
		switch l.MediaType {
		case types.DockerLayer, types.DockerUncompressedLayer, types.OCILayer, types.OCIUncompressedLayer:
		case types.OCILayerZStd:
			return DockerImage{}, "zstd layers (docker load of Docker 20.10 reads plain and gzip tar only)", nil
		default:
			return DockerImage{}, "layer type " + clip(string(l.MediaType)), nil
		}
		if err := checkBlobRef(l.Digest); err != nil {
			return DockerImage{}, "", err
		}
		if !src.stored(l.Digest) {
			return DockerImage{}, "layers left to the base bundle or inventory", nil
		}
		e.Layers = append(e.Layers, BlobName(l.Digest))
	}
	return e, "", nil
}

func checkBlobRef(h v1.Hash) error {
	_, err := ParseDigest(h.String())
	return err
}

// DockerImages returns what manifest.json holds (as the bundle's ferry.json
// and manifests imply it) and the images it leaves out, and why; nothing
// when ferry.json names no docker platform. The manifests are read and
// checked against their digests.
func (r *Reader) DockerImages() ([]DockerImage, []DockerSkip, error) {
	b, skips, err := dockerManifest(r.record, readerSource{r})
	if err != nil || b == nil {
		return nil, skips, err
	}
	var out []DockerImage
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, nil, err
	}
	return out, skips, nil
}

// readerSource reads manifests from the bundle, verified.
type readerSource struct{ r *Reader }

func (s readerSource) manifest(h v1.Hash) ([]byte, error) { return s.r.ReadBlob(h, MaxManifestSize) }
func (s readerSource) stored(h v1.Hash) bool              { return s.r.Has(h) }

// planSource reads manifests from the plan (they are in memory).
type planSource map[v1.Hash]*PlannedBlob

func newPlanSource(plan *Plan) planSource {
	s := make(planSource, len(plan.Blobs))
	for i := range plan.Blobs {
		s[plan.Blobs[i].Digest] = &plan.Blobs[i]
	}
	return s
}

func (s planSource) manifest(h v1.Hash) ([]byte, error) {
	b, ok := s[h]
	switch {
	case !ok:
		return nil, fmt.Errorf("manifest %s is not planned", h)
	case b.Data == nil:
		return nil, fmt.Errorf("manifest %s is not in memory (a plan holds manifests as Data)", h)
	}
	return b.Data, nil
}

func (s planSource) stored(h v1.Hash) bool { _, ok := s[h]; return ok }

// checkDockerManifest checks manifest.json's shape when Open indexes a
// bundle: one JSON array of entries whose Config and Layers name stored
// blobs and whose RepoTags are the bundle's own TARGET:TAG names, each
// once. Verify checks that it is exactly what ferry.json and the manifests
// imply (checkDockerExact), which needs the manifests read.
func (r *Reader) checkDockerManifest(rec *Record) error {
	if rec.DockerPlatform != "" {
		if _, err := parseDockerPlatform(rec.DockerPlatform); err != nil {
			return fmt.Errorf("%w: %s: %v", ErrCorrupt, RecordFile, err)
		}
	}
	if _, ok := r.entries[DockerManifestFile]; !ok {
		return nil
	}
	if rec.DockerPlatform == "" {
		return fmt.Errorf("%w: %s is present but %s names no docker platform", ErrCorrupt, DockerManifestFile, RecordFile)
	}
	data, err := r.readEntry(DockerManifestFile, MaxMetadataSize)
	if err != nil {
		return err
	}
	var entries []DockerImage
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&entries); err != nil || dec.More() || len(entries) == 0 {
		return fmt.Errorf("%w: %s is not a docker-save manifest (a non-empty JSON array of Config, RepoTags, Layers)", ErrCorrupt, DockerManifestFile)
	}
	names := map[string]bool{}
	for _, im := range rec.Images {
		for _, t := range im.Tags {
			names[im.Target+":"+t] = true
		}
	}
	seen := map[string]bool{}
	for i, e := range entries {
		if err := r.checkDockerEntry(i, e, names, seen); err != nil {
			return err
		}
	}
	return nil
}

func (r *Reader) checkDockerEntry(i int, e DockerImage, names, seen map[string]bool) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s entry %d: %s", ErrCorrupt, DockerManifestFile, i, fmt.Sprintf(format, args...))
	}
	for _, p := range append([]string{e.Config}, e.Layers...) {
		hexpart, ok := strings.CutPrefix(p, BlobPrefix)
		h, err := ParseDigest("sha256:" + hexpart)
		if !ok || err != nil || !r.Has(h) {
			return bad("%q is not a blob of the bundle", clip(p))
		}
	}
	if len(e.RepoTags) == 0 {
		return bad("no RepoTags")
	}
	for _, t := range e.RepoTags {
		switch {
		case !names[t]:
			return bad("RepoTag %q is not an image of %s", clip(t), RecordFile)
		case seen[t]:
			return bad("RepoTag %q appears twice", clip(t))
		}
		seen[t] = true
	}
	return nil
}

// checkDockerExact reports whether manifest.json is exactly what the
// bundle's ferry.json and manifests imply. Verify calls it once every
// image's tree was read, so the manifests it reads are sound.
func (r *Reader) checkDockerExact() error {
	want, _, err := dockerManifest(r.record, readerSource{r})
	if err != nil {
		return err
	}
	sp, present := r.entries[DockerManifestFile]
	switch {
	case want == nil && !present:
		return nil
	case want == nil:
		return fmt.Errorf("%w: %s has entries, but no image of %s qualifies for docker load", ErrCorrupt, DockerManifestFile, RecordFile)
	case !present:
		return fmt.Errorf("%w: %s is missing (%s names docker platform %s)", ErrCorrupt, DockerManifestFile, RecordFile, r.record.DockerPlatform)
	}
	got, err := r.readEntry(DockerManifestFile, sp.size)
	if err != nil {
		return err
	}
	if !bytes.Equal(got, want) {
		return fmt.Errorf("%w: %s does not match what %s and the manifests imply (an edited entry?)", ErrCorrupt, DockerManifestFile, RecordFile)
	}
	return nil
}

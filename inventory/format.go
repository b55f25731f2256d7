// Package inventory is the internal side's half of the inventory
// hand-shake: Take records what a registry holds for a selection of
// mapping files (tags with their digests, and the digests of every
// manifest, config and layer those images reference, read from manifests
// only), and the file format (Write, Read, Parse, Verify) carries that
// record to the export side, where `ferry export --have` leaves out what
// it already holds.
package inventory

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/ferry-airgap/ferry/internal/names"
)

// Kind is the value of the file's "kind" field: it tells an inventory from
// a bundle's ferry.json or any other JSON passed by mistake.
const Kind = "ferry-inventory"

// FormatVersion is the version of the format this package writes; Parse
// refuses a greater one.
const FormatVersion = 1

// MaxSize bounds an inventory file read into memory.
const MaxSize = 64 << 20

// ErrInvalid: an inventory file is malformed, tampered with, unsigned
// when a signature is required, or for another target. It is bad input
// (ferry exits with status 2).
var ErrInvalid = errors.New("invalid inventory")

// Inventory is what a registry held for a selection, at one moment. It
// holds no credentials.
type Inventory struct {
	Kind          string    `json:"kind"`
	FormatVersion int       `json:"formatVersion"`
	FerryVersion  string    `json:"ferryVersion,omitempty"`
	Created       time.Time `json:"created"`
	// ID is derived from the content (see ContentID): equal holdings give
	// equal ids, whatever the time they were taken.
	ID string `json:"id"`
	// Registry is the registry host (host[:port]) and Prefix the
	// repository prefix of --to: repositories are REGISTRY/PREFIX/TARGET.
	Registry string `json:"registry"`
	Prefix   string `json:"prefix,omitempty"`
	// Repositories are the selection's target repositories, sorted by
	// target path; one that does not exist is listed with no tags.
	Repositories []Repository `json:"repositories"`
}

// Repository is one target repository as the registry holds it.
type Repository struct {
	// Target is the repository path without the prefix: the path a bundle
	// records as an image's target.
	Target string `json:"target"`
	// Tags maps each tag to the digest of the manifest or index it points at.
	Tags map[string]string `json:"tags"`
	// Manifests are the digests of every manifest and index the tags
	// reference (roots and children), sorted.
	Manifests []string `json:"manifests"`
	// Blobs are the digests of every config and layer those manifests
	// reference, sorted.
	Blobs []string `json:"blobs"`
}

// Target returns REGISTRY[/PREFIX], as --to spells it.
func (inv *Inventory) Target() string {
	if inv.Prefix == "" {
		return inv.Registry
	}
	return inv.Registry + "/" + inv.Prefix
}

// Repo returns the repository with target path p, or nil.
func (inv *Inventory) Repo(p string) *Repository {
	i, ok := slices.BinarySearchFunc(inv.Repositories, p, func(r Repository, p string) int { return strings.Compare(r.Target, p) })
	if !ok {
		return nil
	}
	return &inv.Repositories[i]
}

// ContentID returns the id of inv's holdings: the SHA-256 of its JSON with
// id, creation time and ferry version left out, cut to 32 hex digits.
func ContentID(inv *Inventory) string {
	c := *inv
	c.ID, c.Created, c.FerryVersion = "", time.Time{}, ""
	b, err := json.Marshal(&c)
	if err != nil {
		b = []byte(err.Error())
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:16])
}

// canonicalize sorts everything and sets Kind, FormatVersion and ID, so
// that equal holdings give equal bytes (apart from the creation time).
func canonicalize(inv *Inventory) {
	inv.Kind, inv.FormatVersion = Kind, FormatVersion
	if inv.Repositories == nil {
		inv.Repositories = []Repository{}
	}
	slices.SortFunc(inv.Repositories, func(a, b Repository) int { return strings.Compare(a.Target, b.Target) })
	for i := range inv.Repositories {
		r := &inv.Repositories[i]
		if r.Tags == nil {
			r.Tags = map[string]string{}
		}
		r.Manifests = sortedSet(r.Manifests)
		r.Blobs = sortedSet(r.Blobs)
	}
	inv.ID = ContentID(inv)
}

func sortedSet(s []string) []string {
	out := slices.Clone(s)
	slices.Sort(out)
	out = slices.Compact(out)
	if out == nil {
		out = []string{}
	}
	return out
}

// Marshal returns inv's file bytes (indented JSON, one trailing newline).
func Marshal(inv *Inventory) ([]byte, error) {
	canonicalize(inv)
	b, err := json.MarshalIndent(inv, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// Parse reads an inventory strictly: one JSON document of kind
// "ferry-inventory", a known format version, no unknown field, valid
// repository paths, tags and sha256 digests, and an id that matches the
// content. Every error wraps ErrInvalid.
func Parse(data []byte) (*Inventory, error) {
	if len(data) > MaxSize {
		return nil, fmt.Errorf("%w: %d bytes, more than %d", ErrInvalid, len(data), MaxSize)
	}
	// Kind and version first: a bundle's ferry.json, or an inventory of a
	// newer format with fields this ferry does not know, gets a message
	// that says so rather than "unknown field".
	var probe struct {
		Kind          string `json:"kind"`
		FormatVersion int    `json:"formatVersion"`
	}
	if err := json.Unmarshal(data, &probe); err == nil {
		if err := checkHeader(probe.Kind, probe.FormatVersion); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
		}
	}
	var inv Inventory
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&inv); err != nil {
		return nil, fmt.Errorf("%w: not valid inventory JSON: %v", ErrInvalid, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("%w: data after the JSON document", ErrInvalid)
	}
	if err := validate(&inv); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	return &inv, nil
}

func validate(inv *Inventory) error {
	if err := checkHeader(inv.Kind, inv.FormatVersion); err != nil {
		return err
	}
	switch {
	case !names.ValidHost(inv.Registry):
		return fmt.Errorf("registry %q is not a host[:port]", clip(inv.Registry))
	case inv.Prefix != "" && !names.ValidRepository(inv.Prefix):
		return fmt.Errorf("prefix %q is not a repository path", clip(inv.Prefix))
	}
	for i, r := range inv.Repositories {
		if err := validateRepo(r); err != nil {
			return err
		}
		if i > 0 && inv.Repositories[i-1].Target >= r.Target {
			return fmt.Errorf("repositories are not sorted by target, or %q is listed twice", clip(r.Target))
		}
	}
	if id := ContentID(inv); inv.ID != id {
		return fmt.Errorf("id %q does not match the content (%s): the file was changed after it was taken", clip(inv.ID), id)
	}
	return nil
}

func checkHeader(kind string, version int) error {
	switch {
	case kind != Kind:
		return fmt.Errorf("kind is %q, want %q (is it a ferry inventory?)", clip(kind), Kind)
	case version < 1:
		return errors.New("no format version")
	case version > FormatVersion:
		return fmt.Errorf("format version %d; this ferry reads up to %d: upgrade ferry", version, FormatVersion)
	}
	return nil
}

func validateRepo(r Repository) error {
	if !names.ValidRepository(r.Target) {
		return fmt.Errorf("repository %q is not a repository path", clip(r.Target))
	}
	for tag, d := range r.Tags {
		if !names.ValidTag(tag) {
			return fmt.Errorf("repository %s: tag %q is not a valid tag", r.Target, clip(tag))
		}
		if _, err := names.ParseSHA256(d); err != nil {
			return fmt.Errorf("repository %s: tag %s: %v", r.Target, tag, err)
		}
	}
	for _, list := range [][]string{r.Manifests, r.Blobs} {
		for _, d := range list {
			if _, err := names.ParseSHA256(d); err != nil {
				return fmt.Errorf("repository %s: %v", r.Target, err)
			}
		}
	}
	return nil
}

// clip shortens untrusted text before it goes into an error message.
func clip(s string) string {
	const max = 80
	if len(s) > max {
		return s[:max] + "…"
	}
	return s
}

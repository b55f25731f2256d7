package bundle

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// SourceDateEpochEnv is the reproducible-builds variable that fixes every
// timestamp a bundle records: seconds since 1970-01-01 UTC.
// https://reproducible-builds.org/specs/source-date-epoch/
const SourceDateEpochEnv = "SOURCE_DATE_EPOCH"

// ErrSourceDateEpoch: SOURCE_DATE_EPOCH is set but is not a non-negative
// whole number of seconds.
var ErrSourceDateEpoch = errors.New("invalid " + SourceDateEpochEnv)

// SourceDateEpoch reads SOURCE_DATE_EPOCH. ok is false when it is unset or
// empty; a value that is not a whole number of seconds since 1970 (or is
// past the year 9999) is an error wrapping ErrSourceDateEpoch.
func SourceDateEpoch() (t time.Time, ok bool, err error) {
	return parseSourceDateEpoch(os.Getenv(SourceDateEpochEnv))
}

func parseSourceDateEpoch(v string) (time.Time, bool, error) {
	v = strings.TrimSpace(v)
	if v == "" {
		return time.Time{}, false, nil
	}
	const maxEpoch = 253402300799 // 9999-12-31T23:59:59Z, the last second RFC 3339 can write
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 || n > maxEpoch {
		return time.Time{}, false, fmt.Errorf("%w: %q is not a whole number of seconds since 1970-01-01 UTC (e.g. $(git log -1 --format=%%ct))", ErrSourceDateEpoch, clip(v))
	}
	return time.Unix(n, 0).UTC(), true, nil
}

// canonicalPlan returns a copy of plan in the order the bundle records
// it, which depends on content only: images by target path, then digest;
// each image's tags sorted, without duplicates; blobs by kind (manifests,
// configs, layers), then digest; base blobs and base images likewise. The
// order in which a caller resolved or fetched anything leaves no trace.
func canonicalPlan(plan *Plan) *Plan {
	out := *plan
	out.Images = slices.Clone(plan.Images)
	for i := range out.Images {
		out.Images[i].Tags = sortedTags(out.Images[i].Tags)
	}
	slices.SortStableFunc(out.Images, func(a, b PlannedImage) int {
		return cmp.Or(cmp.Compare(a.Target, b.Target), cmp.Compare(a.Digest, b.Digest))
	})
	out.Blobs = slices.Clone(plan.Blobs)
	slices.SortStableFunc(out.Blobs, func(a, b PlannedBlob) int {
		return cmp.Or(cmp.Compare(a.Kind, b.Kind), cmp.Compare(a.Digest.Hex, b.Digest.Hex))
	})
	if plan.BaseBlobs != nil {
		out.BaseBlobs = slices.Clone(plan.BaseBlobs)
		slices.SortStableFunc(out.BaseBlobs, func(a, b Blob) int { return cmp.Compare(a.Digest, b.Digest) })
	}
	if plan.BaseImages != nil {
		out.BaseImages = slices.Clone(plan.BaseImages)
		for i := range out.BaseImages {
			out.BaseImages[i].Tags = sortedTags(out.BaseImages[i].Tags)
		}
		slices.SortStableFunc(out.BaseImages, func(a, b BaseImage) int {
			return cmp.Or(cmp.Compare(a.Target, b.Target), cmp.Compare(a.Digest, b.Digest))
		})
	}
	return &out
}

// contentID derives a bundle's id from what it carries: the SHA-256 of
// ferry.json with the id, the creation time and the ferry version left
// out, cut to 32 hex digits. Equal content gives an equal id; any
// difference in images, tags, blobs or base gives another.
func contentID(rec *Record) string {
	c := *rec
	c.ID, c.Created, c.FerryVersion = "", time.Time{}, ""
	b, err := json.Marshal(&c)
	if err != nil { // a Record always marshals; keep the id well-formed anyway
		b = []byte(err.Error())
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:16])
}

// sortedTags returns a sorted copy of tags without duplicates.
func sortedTags(tags []string) []string {
	out := slices.Clone(tags)
	slices.Sort(out)
	return slices.Compact(out)
}

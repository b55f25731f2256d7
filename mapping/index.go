package mapping

import (
	"encoding/json"
	"fmt"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/ferry-airgap/ferry/internal/oci"
)

// selectPlatforms keeps the index entries matching any of platforms (all
// when platforms is empty). Entries without a platform (attestations,
// signatures stored in the index) are kept only when all are kept.
func selectPlatforms(ds []v1.Descriptor, platforms []string) ([]v1.Descriptor, error) {
	if len(platforms) == 0 {
		return ds, nil
	}
	var want []v1.Platform
	for _, s := range platforms {
		for _, part := range strings.Split(s, ",") {
			p, err := v1.ParsePlatform(strings.TrimSpace(part))
			if err != nil {
				return nil, fmt.Errorf("platform %q: %w", part, err)
			}
			want = append(want, *p)
		}
	}
	var keep []v1.Descriptor
	for _, d := range ds {
		if d.Platform == nil {
			continue
		}
		for _, w := range want {
			if d.Platform.Satisfies(w) {
				keep = append(keep, d)
				break
			}
		}
	}
	if len(keep) == 0 {
		var have []string
		for _, d := range ds {
			if d.Platform != nil {
				have = append(have, oci.PlatformString(d.Platform))
			}
		}
		return nil, fmt.Errorf("no manifest for platform %s (the index has %s)", strings.Join(platforms, ","), strings.Join(have, ", "))
	}
	return keep, nil
}

// rewriteIndex replaces the manifests of an index document, keeping every
// other field as it was.
func rewriteIndex(data []byte, keep []v1.Descriptor) ([]byte, error) {
	var doc map[string]json.RawMessage
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, err
	}
	ms, err := json.Marshal(keep)
	if err != nil {
		return nil, err
	}
	doc["manifests"] = ms
	return json.Marshal(doc)
}

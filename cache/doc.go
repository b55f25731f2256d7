// Package cache is a pull-through registry cache for many upstreams at
// once: /v2/NAME/REPO/... is pulled through from the upstream called NAME.
//
// Blobs are stored once by digest whatever upstream they came from, and
// verified before they are kept; concurrent requests for one blob through
// one upstream share one download, which goes on when a client
// disconnects. One process serves a store directory (a flock on DIR/lock). Manifests by
// tag are revalidated with one upstream HEAD once their TTL has passed, and
// served from the store when the upstream cannot be reached; manifests by
// digest are never revalidated. The cache records access times itself; its
// cleaner evicts the least recently used blobs and manifests once the store
// passes its bound, and never leaves a manifest whose blobs are gone.
//
// The package reaches registries only through the Upstream interface;
// upstream.go implements it on ferry's registry client.
package cache

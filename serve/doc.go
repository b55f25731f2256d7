// Package serve answers the pull side of the OCI distribution API straight
// from one or more bundle files, with no extraction: GET /v2/, manifests and
// blobs (GET and HEAD, blobs with Range), tags list and catalog with n/last
// pagination, the referrers API, and OCI error bodies. Push and delete
// answer 405 UNSUPPORTED.
//
// Images are served under their target path, optionally under a prefix and,
// with WithSourceNames, also under their source name with the registry host
// as first segment (docker.io/library/redis). Several bundles are served as
// one: a digest is served from whichever bundle holds it, and for the same
// repository and tag a later bundle wins.
//
// Bytes are checked as they leave: a manifest is read and verified on every
// request (manifests are small), and a full blob GET streams through the
// bundle's verifying reader, so a blob whose content does not match its
// digest is cut short (the connection is aborted before the last chunk)
// rather than delivered whole. Range requests serve the raw bytes of the
// range; a client checks the digest once it holds the whole blob.
//
// Mirrors computes client configurations (containerd hosts.toml, Docker
// daemon.json, OpenShift ImageDigestMirrorSet) that send pulls of upstream
// names to a registry holding a bundle's images.
//
// The package knows nothing about command lines or terminals; it logs
// through *slog.Logger values that discard by default.
package serve

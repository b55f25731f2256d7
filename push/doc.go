// Package push is ferry's internal side: it verifies a bundle and pushes its
// images into a registry (Harbor or any OCI distribution registry), with the
// digests they had upstream.
//
// Guarantees, per image: every blob is in the target repository before any
// manifest that references it, child manifests are pushed (by digest) before
// their index, and tags are pushed last, so no tag ever points at an image
// that is not complete. A blob that fails its digest check stops exactly the
// images that need it: manifests and configs are checked before anything
// is pushed, layers as they stream (the last byte of a damaged one is held
// back, so its upload is cut and the registry commits nothing; the PUT's
// ?digest= is the registry's own check). Blobs the target already has are
// skipped; a blob already in another repository of the same registry is
// mounted instead of uploaded; each digest is uploaded once per
// repository. One --jobs limit is shared by all images.
//
// On many small images a registry is bound by the number of requests, so
// each costs as few as the API allows: a blob another repository of the
// run holds is mounted (one request); any other blob is asked for with a
// mount from its own repository, which finds it there (201) or opens the
// upload the one PUT completes (202); a tagged manifest is put by its tags
// only; the survey asks one tag per repository, then its tag list.
//
// A bundle cut against an inventory (export --have) leaves out what the
// inventory said the target held. Before anything is pushed, have.go
// checks that it still does: an image that depends on something gone (a
// blob of its own tree, or, for an image left out whole, its tag) fails
// alone with a StaleError; Options.Strict refuses the bundle instead.
//
// The package speaks the registry API itself (HEAD, POST with mount, PUT)
// through the authenticated transport of internal/registry, so that every
// request is visible and ordered; Harbor specifics live in harbor.go.
package push

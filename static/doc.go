// Package static unpacks bundles into a tree of files that a static web
// server serves as a read-only OCI registry (ferry unpack --static):
//
//	DIR/v2/<name>/manifests/<tag>           the manifest a tag names
//	DIR/v2/<name>/manifests/sha256:<hex>    every manifest and index, by digest
//	DIR/v2/<name>/blobs/sha256:<hex>        configs, layers (and manifests)
//	DIR/v2/<name>/tags/list                 {"name": …, "tags": […]}
//	DIR/v2/<name>/tags/first/<n>            the first n tags (?n=; see pages.go)
//	DIR/v2/<name>/tags/after/<n>/<tag>      the n tags after tag (?last=)
//	DIR/v2/<name>/referrers/sha256:<hex>    referrers tag schema indexes
//	DIR/v2/_catalog                         {"repositories": […]}
//	DIR/blobs/sha256/<hex>                  the one copy of each blob
//	DIR/nginx.conf                          maps + server block (core nginx)
//	DIR/.ferry/                             journal of verified files, lock
//
// Every file under v2/ is a hard link to the copy under blobs/ where the
// filesystem allows (a copy otherwise). Each blob's digest is checked as it
// is written; files are written to a temporary name and renamed, so a
// reader (or a crash) never sees a part. A rerun keeps what is there: a file
// counts as present when its size, modification time, change time, inode
// and device match what the journal recorded when ferry last hashed it
// (see stamp for the premise and its limits), or when its content hashes
// to its digest; anything else is written again. Tags are replaced
// atomically when they move. Unpacking adds: it never removes a tag or a
// blob, so a delta bundle unpacks on top of its base into the same tree.
//
// Prune (WithPrune) is the one exception: the tree then keeps exactly the
// tags the bundles carry (a delta's base images included) and those a keep
// pattern matches, and removes the rest in an order that keeps every
// listed tag whole: new content, then the tag lists, then the removed tag
// files, then nginx.conf, then the manifests and blobs no kept manifest
// reaches (prune.go). It refuses a DIR without ferry's journal or
// nginx.conf and leaves files of shapes it does not write alone.
//
// DIR must be new, empty, or a tree ferry wrote (it has .ferry/, or an
// nginx.conf that starts with ferry's line); anything else, a regular
// file included, is refused with ErrOptions before anything is written,
// so that a typo such as DIR=/etc/nginx never replaces a site's
// configuration. Names and tags are checked against the distribution
// grammar, against each other and against what earlier runs left in the
// tree, all before the first write; every path is built from checked
// components under DIR, and a symbolic link inside the tree is refused
// rather than followed.
//
// UnpackS3 writes the same tree as objects under an S3 bucket and prefix
// (s3.go): no store folder, no nginx.conf, no tag list pages; blobs are
// uploaded once, digest checked, and copied on the server; tags are
// written after all they reference; a rerun lists the prefix and trusts
// an object by the ETag the journal recorded (see s3Tree.verified).
//
// The package knows nothing about command lines or terminals; it reports
// progress through bundle.Progress and logs through a *slog.Logger that
// discards by default.
package static

// Package objstore is ferry's way into S3-compatible object storage: it
// parses s3://BUCKET/PREFIX locations, sets up a client from the usual AWS
// environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN,
// AWS_REGION, ~/.aws/credentials, instance roles) and an optional endpoint
// for non-AWS servers (path-style addressing), and offers the few object
// operations ferry needs, keyed under the prefix: conditional create
// (If-None-Match: *), replace-if-unchanged (If-Match), streaming reads with
// Range, listing and removal.
//
// It knows nothing about registries or caches; the client is minio-go's
// (no hand-written request signing).
package objstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// Errors, tested with errors.Is.
var (
	// ErrBadLocation: the s3:// URL or the endpoint cannot work (bad usage).
	ErrBadLocation = errors.New("bad object storage location")
	// ErrNotExist: no object under that key.
	ErrNotExist = errors.New("object does not exist")
	// ErrPrecondition: a conditional write lost (the key exists, or changed).
	ErrPrecondition = errors.New("precondition failed")
)

// Location is a parsed s3://BUCKET/PREFIX.
type Location struct {
	Bucket string
	Prefix string // without leading or trailing slash; may be empty
}

func (l Location) String() string {
	if l.Prefix == "" {
		return "s3://" + l.Bucket
	}
	return "s3://" + l.Bucket + "/" + l.Prefix
}

// ParseLocation parses s3://BUCKET[/PREFIX].
func ParseLocation(s string) (Location, error) {
	rest, ok := strings.CutPrefix(s, "s3://")
	if !ok {
		return Location{}, fmt.Errorf("%w: %q: want s3://BUCKET/PREFIX", ErrBadLocation, s)
	}
	bucket, prefix, _ := strings.Cut(rest, "/")
	prefix = strings.Trim(prefix, "/")
	if bucket == "" || len(bucket) < 3 || len(bucket) > 63 || strings.ContainsAny(bucket, "?#:@ ") {
		return Location{}, fmt.Errorf("%w: %q: bad bucket name %q", ErrBadLocation, s, bucket)
	}
	if strings.Contains(prefix, "//") || strings.ContainsAny(prefix, "?#") {
		return Location{}, fmt.Errorf("%w: %q: bad prefix %q", ErrBadLocation, s, prefix)
	}
	return Location{Bucket: bucket, Prefix: prefix}, nil
}

// Options say how to reach the server. Zero values come from the
// environment (see Open).
type Options struct {
	// Endpoint is the server's URL (http://127.0.0.1:8333,
	// https://minio.corp); empty: $AWS_ENDPOINT_URL_S3, $AWS_ENDPOINT_URL,
	// else AWS (s3.amazonaws.com). A non-AWS endpoint is addressed
	// path-style. Plain http is accepted for loopback hosts only, since
	// requests carry credentials.
	Endpoint string
	// Region; empty: $AWS_REGION, $AWS_DEFAULT_REGION, else us-east-1.
	Region string
	// Getenv reads the environment (tests); default os.Getenv.
	Getenv func(string) string
}

// Store is a bucket and prefix on one server.
type Store struct {
	c   *minio.Client
	loc Location
}

// Open returns a Store for loc. Credentials come from
// AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY(/AWS_SESSION_TOKEN), else the
// shared credentials file, else the instance's role. It sends no request.
func Open(loc Location, o Options) (*Store, error) {
	getenv := o.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	endpoint := firstNonEmpty(o.Endpoint, getenv("AWS_ENDPOINT_URL_S3"), getenv("AWS_ENDPOINT_URL"))
	region := firstNonEmpty(o.Region, getenv("AWS_REGION"), getenv("AWS_DEFAULT_REGION"))
	host, secure, lookup := "s3.amazonaws.com", true, minio.BucketLookupAuto
	if endpoint != "" {
		u, err := url.Parse(endpoint)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") {
			return nil, fmt.Errorf("%w: endpoint %q: want http(s)://HOST[:PORT]", ErrBadLocation, endpoint)
		}
		if u.Scheme == "http" && !isLoopback(u.Hostname()) {
			return nil, fmt.Errorf("%w: endpoint %q: plain http only to loopback addresses (requests carry credentials)", ErrBadLocation, endpoint)
		}
		host, secure, lookup = u.Host, u.Scheme == "https", minio.BucketLookupPath
	}
	if region == "" {
		region = "us-east-1"
	}
	creds := credentials.NewChainCredentials([]credentials.Provider{&credentials.FileAWSCredentials{}, &credentials.IAM{}})
	if id := getenv("AWS_ACCESS_KEY_ID"); id != "" {
		creds = credentials.NewStaticV4(id, getenv("AWS_SECRET_ACCESS_KEY"), getenv("AWS_SESSION_TOKEN"))
	}
	c, err := minio.New(host, &minio.Options{Creds: creds, Secure: secure, Region: region, BucketLookup: lookup})
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadLocation, err)
	}
	return &Store{c: c, loc: loc}, nil
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

func isLoopback(h string) bool {
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// Location returns where the store is.
func (s *Store) Location() Location { return s.loc }

func (s *Store) key(k string) string {
	if s.loc.Prefix == "" {
		return k
	}
	return s.loc.Prefix + "/" + k
}

// Info describes an object; Key is relative to the prefix.
type Info struct {
	Key      string
	Size     int64
	Modified time.Time
	ETag     string
	// ContentType is set by Stat and Open (a listing does not carry it).
	ContentType string
}

// wrap turns a client error into one naming the object, with ErrNotExist
// or ErrPrecondition where they apply.
func (s *Store) wrap(op, k string, err error) error {
	if err == nil {
		return nil
	}
	r := minio.ToErrorResponse(err)
	where := s.loc.Bucket + "/" + s.key(k)
	switch {
	case r.StatusCode == http.StatusNotFound || r.Code == "NoSuchKey":
		return fmt.Errorf("%s s3://%s: %w", op, where, ErrNotExist)
	case r.StatusCode == http.StatusPreconditionFailed || r.Code == "PreconditionFailed":
		return fmt.Errorf("%s s3://%s: %w", op, where, ErrPrecondition)
	}
	return fmt.Errorf("%s s3://%s: %w", op, where, err)
}

// PutOptions are an object's headers.
type PutOptions struct {
	ContentType string
	Metadata    map[string]string // x-amz-meta-*
}

func (o PutOptions) minio() minio.PutObjectOptions {
	return minio.PutObjectOptions{ContentType: o.ContentType, UserMetadata: o.Metadata,
		// One PUT: the object appears whole or not at all, and the
		// condition is checked by the same request (up to 5 GiB on AWS).
		DisableMultipart: true, DisableContentSha256: true, SendContentMd5: false}
}

// Create writes key only if no object is there (If-None-Match: *): of
// concurrent creators exactly one wins; the others get ErrPrecondition.
// The object becomes visible whole, once every byte arrived.
func (s *Store) Create(ctx context.Context, k string, r io.Reader, size int64, o PutOptions) error {
	mo := o.minio()
	mo.SetMatchETagExcept("*")
	_, err := s.c.PutObject(ctx, s.loc.Bucket, s.key(k), r, size, mo)
	return s.wrap("creating", k, err)
}

// Replace overwrites key only if its ETag is still etag (If-Match); a
// lost race gives ErrPrecondition.
func (s *Store) Replace(ctx context.Context, k, etag string, r io.Reader, size int64, o PutOptions) error {
	mo := o.minio()
	mo.SetMatchETag(strings.Trim(etag, `"`))
	_, err := s.c.PutObject(ctx, s.loc.Bucket, s.key(k), r, size, mo)
	return s.wrap("replacing", k, err)
}

// maxSinglePut is the largest object one PUT may write (AWS's limit).
const maxSinglePut = 5 << 30

// Put writes key unconditionally and returns the ETag the server gave it.
// Up to 5 GiB it is one PUT; a larger object is a multipart upload that
// the server completes only after the last part. Either way the object
// appears whole or not at all: a reader r that fails, or ends before
// size bytes, leaves no object (and no change to an existing one).
func (s *Store) Put(ctx context.Context, k string, r io.Reader, size int64, o PutOptions) (string, error) {
	mo := o.minio()
	mo.DisableMultipart = size >= 0 && size <= maxSinglePut
	ui, err := s.c.PutObject(ctx, s.loc.Bucket, s.key(k), r, size, mo)
	return strings.Trim(ui.ETag, `"`), s.wrap("writing", k, err)
}

// Copy makes key dst a copy of key src's bytes with o's headers, on the
// server (no bytes pass through ferry; above 5 GiB as a multipart copy),
// and returns dst's ETag.
func (s *Store) Copy(ctx context.Context, dst, src string, o PutOptions) (string, error) {
	meta := map[string]string{}
	for k, v := range o.Metadata {
		meta[k] = v
	}
	if o.ContentType != "" {
		meta["Content-Type"] = o.ContentType
	}
	ui, err := s.c.ComposeObject(ctx, minio.CopyDestOptions{Bucket: s.loc.Bucket, Object: s.key(dst), UserMetadata: meta, ReplaceMetadata: true},
		minio.CopySrcOptions{Bucket: s.loc.Bucket, Object: s.key(src)})
	if err != nil {
		return "", s.wrap("copying s3://"+s.loc.Bucket+"/"+s.key(src)+" to", dst, err)
	}
	return strings.Trim(ui.ETag, `"`), nil
}

// Stat returns key's size, modification time and ETag.
func (s *Store) Stat(ctx context.Context, k string) (Info, error) {
	oi, err := s.c.StatObject(ctx, s.loc.Bucket, s.key(k), minio.StatObjectOptions{})
	if err != nil {
		return Info{}, s.wrap("reading", k, err)
	}
	return Info{Key: k, Size: oi.Size, Modified: oi.LastModified, ETag: strings.Trim(oi.ETag, `"`), ContentType: oi.ContentType}, nil
}

// Object is an open object: a ReadSeeker whose reads are ranged GETs made
// as they are needed (so http.ServeContent serves Range requests from it).
type Object interface {
	io.ReadSeekCloser
	io.ReaderAt
}

// Open opens key for reading and returns its size; ErrNotExist if absent.
func (s *Store) Open(ctx context.Context, k string) (Object, Info, error) {
	obj, err := s.c.GetObject(ctx, s.loc.Bucket, s.key(k), minio.GetObjectOptions{})
	if err != nil {
		return nil, Info{}, s.wrap("reading", k, err)
	}
	oi, err := obj.Stat()
	if err != nil {
		_ = obj.Close()
		return nil, Info{}, s.wrap("reading", k, err)
	}
	return obj, Info{Key: k, Size: oi.Size, Modified: oi.LastModified, ETag: strings.Trim(oi.ETag, `"`), ContentType: oi.ContentType}, nil
}

// PresignGet returns a URL that reads key without credentials until
// expires has passed (a GET signed in advance; the client may send Range).
func (s *Store) PresignGet(ctx context.Context, k string, expires time.Duration) (string, error) {
	u, err := s.c.PresignedGetObject(ctx, s.loc.Bucket, s.key(k), expires, nil)
	if err != nil {
		return "", s.wrap("signing a URL for", k, err)
	}
	return u.String(), nil
}

// Get reads all of key, which must be at most limit bytes.
func (s *Store) Get(ctx context.Context, k string, limit int64) ([]byte, Info, error) {
	obj, info, err := s.Open(ctx, k)
	if err != nil {
		return nil, Info{}, err
	}
	defer func() { _ = obj.Close() }()
	if info.Size > limit {
		return nil, Info{}, fmt.Errorf("reading s3://%s/%s: %d bytes, more than %d", s.loc.Bucket, s.key(k), info.Size, limit)
	}
	b, err := io.ReadAll(io.LimitReader(obj, limit+1))
	if err != nil {
		return nil, Info{}, s.wrap("reading", k, err)
	}
	return b, info, nil
}

// List calls fn for every object whose key starts with prefix (relative
// to the store's prefix), in key order.
func (s *Store) List(ctx context.Context, prefix string, fn func(Info) error) error {
	full := s.key(prefix)
	strip := len(s.key(""))
	if s.loc.Prefix == "" {
		strip = 0
	}
	for oi := range s.c.ListObjects(ctx, s.loc.Bucket, minio.ListObjectsOptions{Prefix: full, Recursive: true}) {
		if oi.Err != nil {
			return s.wrap("listing", prefix, oi.Err)
		}
		if err := fn(Info{Key: oi.Key[strip:], Size: oi.Size, Modified: oi.LastModified, ETag: strings.Trim(oi.ETag, `"`)}); err != nil {
			return err
		}
	}
	return nil
}

// Remove deletes key; a missing key is not an error.
func (s *Store) Remove(ctx context.Context, k string) error {
	err := s.c.RemoveObject(ctx, s.loc.Bucket, s.key(k), minio.RemoveObjectOptions{})
	if err != nil && errors.Is(s.wrap("", k, err), ErrNotExist) {
		return nil
	}
	return s.wrap("removing", k, err)
}

// MakeBucket creates the store's bucket unless it exists (tests, setup).
func (s *Store) MakeBucket(ctx context.Context) error {
	ok, err := s.c.BucketExists(ctx, s.loc.Bucket)
	if err == nil && !ok {
		err = s.c.MakeBucket(ctx, s.loc.Bucket, minio.MakeBucketOptions{})
	}
	if err != nil {
		return fmt.Errorf("creating bucket %s: %w", s.loc.Bucket, err)
	}
	return nil
}

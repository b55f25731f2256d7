package harness

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/ferry-airgap/ferry/internal/objstore"
)

// WeedVersion is the SeaweedFS version .ci/run builds (keep in step).
const WeedVersion = "v0.0.0-20261109003541-7506e5f91cd6"

// Seaweed is a real SeaweedFS (`weed server -s3`: master, volume, filer and
// S3 gateway in one process) on loopback ports, with one static identity.
// One serves the whole test binary: StartSeaweed starts it on first use,
// StopSeaweed (called from TestMain) stops it. Tests keep out of each
// other's way with their own buckets (Bucket).
type Seaweed struct {
	Endpoint  string // http://127.0.0.1:PORT, the S3 gateway
	AccessKey string
	SecretKey string
	Dir       string // its data

	cmd   *exec.Cmd
	ports []int
	socks map[string]bool // /tmp/seaweedfs-*-grpc-*.sock present before start
	next  atomic.Int64    // buckets made
}

// VirtualHostDomain is the domain under which the S3 gateway also answers
// virtual-hosted requests (Host: BUCKET.s3.ferry.test:PORT): the bucket's
// keys are then the URL's path, as on an S3 website endpoint or behind a
// CDN, so a static tree's v2/ is at the root. Nothing resolves it but a
// process run with RunOptions.Hosts (see VirtualHost).
const VirtualHostDomain = "s3.ferry.test"

// VirtualHost returns the HOST:PORT under which bucket's objects are at
// the URL root, and the /etc/hosts line that makes it reach the gateway.
func (s *Seaweed) VirtualHost(bucket string) (host, hostsLine string) {
	name := bucket + "." + VirtualHostDomain
	return name + ":" + strings.TrimPrefix(s.Endpoint, "http://127.0.0.1:"), "127.0.0.1 " + name
}

// PublicRead lets anyone read bucket's objects without signing (a bucket
// policy granting s3:GetObject to "*"), as a bucket published as a static
// registry is.
func (s *Seaweed) PublicRead(t testing.TB, bucket string) {
	t.Helper()
	c, err := minio.New(strings.TrimPrefix(s.Endpoint, "http://"), &minio.Options{
		Creds: credentials.NewStaticV4(s.AccessKey, s.SecretKey, ""), BucketLookup: minio.BucketLookupPath, Region: "us-east-1"})
	if err == nil {
		err = c.SetBucketPolicy(context.Background(), bucket, fmt.Sprintf(
			`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":"*","Action":["s3:GetObject"],"Resource":["arn:aws:s3:::%s/*"]}]}`, bucket))
	}
	if err != nil {
		t.Fatalf("making bucket %s public: %v", bucket, err)
	}
}

// Env is the environment a ferry process needs to reach the server
// (credentials as the AWS variables).
func (s *Seaweed) Env() []string {
	return []string{"AWS_ACCESS_KEY_ID=" + s.AccessKey, "AWS_SECRET_ACCESS_KEY=" + s.SecretKey, "AWS_REGION=us-east-1"}
}

var seaweedShared sharedServer[Seaweed]

// WeedPath finds the weed binary: $FERRY_WEED, else ~/go/bin/weed
// ($GOBIN, where .ci/run builds it), else PATH.
func WeedPath() (string, error) {
	if p := os.Getenv("FERRY_WEED"); p != "" {
		return p, nil
	}
	if home, err := os.UserHomeDir(); err == nil {
		if p := filepath.Join(home, "go", "bin", "weed"); isExec(p) {
			return p, nil
		}
	}
	return exec.LookPath("weed")
}

func isExec(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

// StartSeaweed returns the test binary's SeaweedFS, starting it on first
// use (a few seconds). Where weed is missing the test fails (build it as
// .ci/run does, version WeedVersion), unless FERRY_SKIP_SEAWEED=1 asks to skip.
func StartSeaweed(t testing.TB) *Seaweed {
	t.Helper()
	return seaweedShared.get(t, "SeaweedFS", "FERRY_SKIP_SEAWEED", startSeaweed)
}

// StopSeaweed stops the test binary's SeaweedFS, if one was started (SIGTERM,
// then SIGKILL after 25 s), and removes its data and the gRPC sockets it made.
func StopSeaweed() {
	if s := seaweedShared.take(); s != nil {
		s.stop()
	}
}

func (s *Seaweed) stop() {
	terminate(s.cmd, 25*time.Second)
	// weed makes unix sockets in /tmp (seaweedfs-NAME[-grpc]-PORT.sock);
	// remove the ones of this process's ports that were not there before.
	socks, _ := filepath.Glob("/tmp/seaweedfs-*.sock")
	for _, p := range socks {
		if !s.socks[p] && s.ownsSocket(p) {
			_ = os.Remove(p)
		}
	}
	if os.Getenv("FERRY_KEEP_SEAWEED") != "1" {
		_ = os.RemoveAll(s.Dir)
	}
}

func (s *Seaweed) ownsSocket(p string) bool {
	for _, port := range s.ports {
		if strings.Contains(filepath.Base(p), "-"+strconv.Itoa(port)+".sock") {
			return true
		}
	}
	return false
}

func startSeaweed() (*Seaweed, error) {
	bin, err := WeedPath()
	if err != nil {
		return nil, fmt.Errorf("no weed binary (set FERRY_WEED, or build github.com/seaweedfs/seaweedfs@%s ./weed into ~/go/bin as .ci/run does): %w", WeedVersion, err)
	}
	dir, err := os.MkdirTemp("", "ferry-seaweed-")
	if err != nil {
		return nil, err
	}
	// master, volume, filer, s3 and their gRPC ports, all picked free.
	ports, err := freePorts(8)
	if err != nil {
		return nil, err
	}
	s := &Seaweed{Endpoint: fmt.Sprintf("http://127.0.0.1:%d", ports[3]), AccessKey: "ferrytest", SecretKey: "ferrytest-secret-key",
		Dir: dir, ports: ports, socks: map[string]bool{}}
	ident := map[string]any{"identities": []any{map[string]any{"name": "ferry",
		"credentials": []any{map[string]string{"accessKey": s.AccessKey, "secretKey": s.SecretKey}},
		"actions":     []string{"Admin", "Read", "Write", "List", "Tagging"}}}}
	b, _ := json.Marshal(ident)
	if err := os.WriteFile(filepath.Join(dir, "identity.json"), b, 0o600); err != nil {
		return nil, err
	}
	data := filepath.Join(dir, "data")
	if err := os.MkdirAll(data, 0o755); err != nil {
		return nil, err
	}
	before, _ := filepath.Glob("/tmp/seaweedfs-*.sock")
	for _, p := range before {
		s.socks[p] = true
	}
	p := func(i int) string { return strconv.Itoa(ports[i]) }
	s.cmd = exec.Command(bin, "server", "-dir="+data, "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
		"-master.port="+p(0), "-master.port.grpc="+p(4), "-volume.port="+p(1), "-volume.port.grpc="+p(5),
		"-filer.port="+p(2), "-filer.port.grpc="+p(6), "-s3", "-s3.port="+p(3), "-s3.port.grpc="+p(7),
		"-s3.config="+filepath.Join(dir, "identity.json"), "-s3.port.iceberg=0", "-s3.port.lance=0",
		"-volume.max=0", "-master.volumeSizeLimitMB=64", "-s3.domainName="+VirtualHostDomain)
	log, err := os.Create(filepath.Join(dir, "weed.log"))
	if err != nil {
		return nil, err
	}
	s.cmd.Stdout, s.cmd.Stderr = log, log
	killWithParent(s.cmd)
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", bin, err)
	}
	if err := s.waitReady(ports[0], 90*time.Second); err != nil {
		s.stop()
		out, _ := os.ReadFile(filepath.Join(dir, "weed.log"))
		return nil, fmt.Errorf("%w\n%s", err, tail(out, 3000))
	}
	return s, nil
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// waitReady waits until the master lists a data node (a put before that
// fails) and the S3 gateway answers.
func (s *Seaweed) waitReady(masterPort int, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		if s.hasDataNode(masterPort) && s.s3Answers() {
			return nil
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("SeaweedFS not ready after %s (no data node on the master, or no S3 gateway)", limit)
}

func (s *Seaweed) hasDataNode(masterPort int) bool {
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/dir/status", masterPort))
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	var st struct {
		Topology struct {
			DataCenters []struct {
				Racks []struct {
					DataNodes []json.RawMessage
				}
			}
		}
	}
	if json.NewDecoder(resp.Body).Decode(&st) != nil {
		return false
	}
	for _, dc := range st.Topology.DataCenters {
		for _, r := range dc.Racks {
			if len(r.DataNodes) > 0 {
				return true
			}
		}
	}
	return false
}

func (s *Seaweed) s3Answers() bool {
	c, err := net.DialTimeout("tcp", strings.TrimPrefix(s.Endpoint, "http://"), time.Second)
	if err != nil {
		return false
	}
	_ = c.Close()
	st, err := s.Store(nil, "ferry-probe")
	return err == nil && st.MakeBucket(context.Background()) == nil
}

// Store returns an objstore.Store on bucket (with the harness's
// credentials); t may be nil.
func (s *Seaweed) Store(t testing.TB, bucket string) (*objstore.Store, error) {
	env := map[string]string{"AWS_ACCESS_KEY_ID": s.AccessKey, "AWS_SECRET_ACCESS_KEY": s.SecretKey}
	return objstore.Open(objstore.Location{Bucket: bucket}, objstore.Options{Endpoint: s.Endpoint,
		Getenv: func(k string) string { return env[k] }})
}

// Bucket creates a fresh bucket for one test and returns its name.
func (s *Seaweed) Bucket(t testing.TB) string {
	t.Helper()
	name := fmt.Sprintf("ferry-%d-%d", os.Getpid()%100000, s.next.Add(1))
	st, err := s.Store(t, name)
	if err == nil {
		err = st.MakeBucket(context.Background())
	}
	if err != nil {
		t.Fatalf("creating bucket %s: %v", name, err)
	}
	return name
}

package harness

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Dockerd is a docker daemon a test started: its own data root, exec root
// and socket in a short folder under /tmp (a unix socket path is limited
// to about 108 bytes), no iptables, no bridge. Debian's docker.io (20.10)
// runs it with the classic image store, the one `docker load` of a
// docker-save manifest.json is for.
type Dockerd struct {
	Host   string // unix:///tmp/fd-XXXX/d.sock, for docker -H
	Dir    string
	CLI    string // the docker client to run
	cmd    *exec.Cmd
	logf   string
	config string // DOCKER_CONFIG for the client: nothing from the user's
}

// StartDockerd starts dockerd, waits until it answers /_ping, and stops
// it (and the containerd it started) in t.Cleanup, leaving no process.
func StartDockerd(t testing.TB) *Dockerd {
	t.Helper()
	bin, err := exec.LookPath("dockerd")
	if err != nil {
		t.Fatalf("dockerd missing (%v): run `apt-get update && apt-get install -y docker.io`", err)
	}
	cli := "/usr/bin/docker" // docker.io's own client, of the daemon's version
	if _, err := os.Stat(cli); err != nil {
		if cli, err = exec.LookPath("docker"); err != nil {
			t.Fatalf("docker client missing: %v", err)
		}
	}
	dir, err := os.MkdirTemp("/tmp", "fd-")
	if err != nil {
		t.Fatal(err)
	}
	d := &Dockerd{Host: "unix://" + filepath.Join(dir, "d.sock"), Dir: dir, CLI: cli,
		logf: filepath.Join(dir, "dockerd.log"), config: filepath.Join(dir, "cfg")}
	logFile, err := os.Create(d.logf)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	d.cmd = exec.Command(bin, "--data-root", filepath.Join(dir, "data"), "--exec-root", filepath.Join(dir, "exec"),
		"--pidfile", filepath.Join(dir, "d.pid"), "-H", d.Host, "--iptables=false", "--ip6tables=false", "--bridge=none")
	d.cmd.Stdout, d.cmd.Stderr = logFile, logFile
	killWithParent(d.cmd)
	if err := d.cmd.Start(); err != nil {
		t.Fatalf("starting dockerd: %v", err)
	}
	t.Cleanup(func() { d.stop(t) })
	if err := d.waitReady(60 * time.Second); err != nil {
		t.Fatalf("dockerd: %v\n%s", err, d.logTail())
	}
	return d
}

// waitReady polls the daemon's /_ping over its socket.
func (d *Dockerd) waitReady(timeout time.Duration) error {
	sock := strings.TrimPrefix(d.Host, "unix://")
	client := &http.Client{Timeout: time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		}}}
	defer client.CloseIdleConnections()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if d.cmd.ProcessState != nil {
			return errors.New("exited")
		}
		resp, err := client.Get("http://docker/_ping")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return errors.New("not ready in " + timeout.String())
}

// Docker runs the docker client against the daemon and returns its
// output and exit code.
func (d *Dockerd) Docker(t testing.TB, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(d.CLI, append([]string{"-H", d.Host}, args...)...)
	cmd.Env = append(os.Environ(), "DOCKER_CONFIG="+d.config)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatalf("docker %v: %v", args, err)
	}
	return out.String(), errb.String(), code
}

// DockerOK runs the docker client and fails the test unless it succeeds.
func (d *Dockerd) DockerOK(t testing.TB, args ...string) string {
	t.Helper()
	out, errs, code := d.Docker(t, args...)
	if code != 0 {
		t.Fatalf("docker %v: exit %d\n%s\n%s\ndockerd log:\n%s", args, code, out, errs, d.logTail())
	}
	return out
}

func (d *Dockerd) logTail() string {
	b, _ := os.ReadFile(d.logf)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// stop ends dockerd (SIGTERM, then SIGKILL after 20 s), then every process
// still running from the test's folder (the containerd dockerd started,
// should dockerd have died first), unmounts what is left mounted there and
// removes the folder.
func (d *Dockerd) stop(t testing.TB) {
	terminate(d.cmd, 20*time.Second)
	for _, pid := range processesUnder(d.Dir) {
		if p, err := os.FindProcess(pid); err == nil {
			_ = p.Kill()
			_, _ = p.Wait()
		}
	}
	for _, pid := range processesUnder(d.Dir) {
		t.Errorf("process %d is still running from %s", pid, d.Dir)
	}
	unmountUnder(d.Dir)
	if err := os.RemoveAll(d.Dir); err != nil {
		t.Logf("removing %s: %v", d.Dir, err)
	}
}

// processesUnder lists the processes whose command line names dir (the
// daemons started with their state there), waiting a little for the ones
// that are exiting.
func processesUnder(dir string) []int {
	var pids []int
	for try := 0; try < 20; try++ {
		pids = pids[:0]
		entries, _ := os.ReadDir("/proc")
		for _, e := range entries {
			pid, err := strconv.Atoi(e.Name())
			if err != nil || pid == os.Getpid() {
				continue
			}
			b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
			if err == nil && bytes.Contains(b, []byte(dir+"/")) && !zombie(pid) {
				pids = append(pids, pid)
			}
		}
		if len(pids) == 0 {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return pids
}

func zombie(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	i := bytes.LastIndexByte(b, ')')
	return i < 0 || i+2 >= len(b) || b[i+2] == 'Z'
}

// unmountUnder unmounts every mount point below dir, deepest first.
func unmountUnder(dir string) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return
	}
	var points []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && strings.HasPrefix(f[4], dir+"/") {
			points = append(points, f[4])
		}
	}
	for i := len(points) - 1; i >= 0; i-- {
		unmountDetach(points[i])
	}
}

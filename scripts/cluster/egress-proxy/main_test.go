package main

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

func TestParseRoutes(t *testing.T) {
	table := map[string]string{}
	parseRoutes("t", `
# istiod of revision "default"
10.0.0.17:443 127.0.0.1:15017
10.0.0.18:443   127.0.0.1:25017   
[::ffff:10.0.0.19]:443 127.0.0.1:35017
10.0.0.20:443 10.0.0.20:443
10.0.0.21:443 192.168.1.1:15017
10.0.0.22:443 localhost:15017
10.0.0.23:443 127.0.0.1:0
10.0.0.24 127.0.0.1:15017
10.0.0.25:443
10.0.0.26:443 127.0.0.1:1 extra
Istiod.Istio-System.svc:443 [::1]:15017
`, table)
	want := map[string]string{
		"10.0.0.17:443":               "127.0.0.1:15017",
		"10.0.0.18:443":               "127.0.0.1:25017",
		"10.0.0.19:443":               "127.0.0.1:35017",
		"istiod.istio-system.svc:443": "[::1]:15017",
	}
	if len(table) != len(want) {
		t.Fatalf("got %v, want %v", table, want)
	}
	for k, v := range want {
		if table[k] != v {
			t.Errorf("route %s: got %q, want %q", k, table[k], v)
		}
	}
}

func TestLoadRoutesDirectory(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "a"), "10.0.0.5:443 127.0.0.1:1000\n")
	write(t, filepath.Join(dir, "b"), "10.0.0.5:443 127.0.0.1:2000\n10.0.0.6:443 127.0.0.1:3000\n")
	write(t, filepath.Join(dir, ".b.tmp"), "10.0.0.7:443 127.0.0.1:4000\n")
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	table, err := loadRoutes(dir)
	if err != nil {
		t.Fatal(err)
	}
	// Files are read in name order; the later file wins for the same target.
	if table["10.0.0.5:443"] != "127.0.0.1:2000" || table["10.0.0.6:443"] != "127.0.0.1:3000" || len(table) != 2 {
		t.Fatalf("got %v", table)
	}
	if table, err := loadRoutes(filepath.Join(dir, "missing")); err != nil || len(table) != 0 {
		t.Fatalf("a missing route path must be an empty table, got %v, %v", table, err)
	}
}

// startProxy serves a proxy on a Unix socket in a temporary directory; dials counts every
// connection it opens towards a route's local side.
func startProxy(t *testing.T, routes string) (socket string, dials *atomic.Int32) {
	t.Helper()
	socket = filepath.Join(t.TempDir(), "egress.sock")
	ln, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	dials = new(atomic.Int32)
	p := &proxy{routes: routes, dial: func(addr string) (net.Conn, error) {
		dials.Add(1)
		return dialLoopback(addr)
	}}
	go p.serve(ln)
	return socket, dials
}

// connect sends a CONNECT through the proxy the way kube-apiserver's HTTPConnect dialer does and
// returns the response status and, on 200, the tunnel.
func connect(t *testing.T, socket, target string) (int, net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, "CONNECT "+target+" HTTP/1.1\r\nHost: "+target+"\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, c, br
}

// echoServer answers every line it reads with "echo: " and the line.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				s := bufio.NewScanner(c)
				for s.Scan() {
					io.WriteString(c, "echo: "+s.Text()+"\n")
				}
			}()
		}
	}()
	return ln.Addr().String()
}

func TestConnectMappedTarget(t *testing.T) {
	routes := filepath.Join(t.TempDir(), "routes")
	socket, dials := startProxy(t, routes)
	local := echoServer(t)

	// No route yet: refused without dialling anything.
	if code, _, _ := connect(t, socket, "10.0.0.42:443"); code != http.StatusForbidden {
		t.Fatalf("before the route was added: got %d, want 403", code)
	}
	// The table is re-read for each CONNECT: a route added now applies to the next one.
	write(t, routes, "10.0.0.42:443 "+local+"\n")
	code, c, br := connect(t, socket, "10.0.0.42:443")
	if code != http.StatusOK {
		t.Fatalf("mapped target: got %d, want 200", code)
	}
	io.WriteString(c, "hello\n")
	line, err := br.ReadString('\n')
	if err != nil || line != "echo: hello\n" {
		t.Fatalf("through the tunnel: got %q, %v", line, err)
	}
	if n := dials.Load(); n != 1 {
		t.Fatalf("dialled %d times, want exactly once (for the mapped target)", n)
	}
}

func TestUnmappedTargetsAreNeverDialled(t *testing.T) {
	routes := filepath.Join(t.TempDir(), "routes")
	local := echoServer(t)
	write(t, routes, "10.0.0.42:443 "+local+"\n")
	socket, dials := startProxy(t, routes)

	for _, target := range []string{
		"10.0.0.42:444",  // mapped address, other port
		"10.0.0.43:443",  // another ClusterIP
		"127.0.0.1:6443", // loopback itself is not a target either
		local,            // nor is the route's local side
		"kubernetes.default.svc:443",
	} {
		if code, _, _ := connect(t, socket, target); code != http.StatusForbidden {
			t.Errorf("CONNECT %s: got %d, want 403", target, code)
		}
	}
	if n := dials.Load(); n != 0 {
		t.Fatalf("dialled %d times for unmapped targets, want 0", n)
	}
}

func TestOnlyConnectIsServed(t *testing.T) {
	socket, dials := startProxy(t, filepath.Join(t.TempDir(), "routes"))
	c, err := net.Dial("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET http://10.0.0.42/ HTTP/1.1\r\nHost: 10.0.0.42\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusMethodNotAllowed || dials.Load() != 0 {
		t.Fatalf("GET: got %d with %d dials, want 405 and none", resp.StatusCode, dials.Load())
	}
}

func TestRouteToClosedPortIsBadGateway(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	routes := filepath.Join(t.TempDir(), "routes")
	write(t, routes, "10.0.0.42:443 "+closed+"\n")
	socket, _ := startProxy(t, routes)
	if code, _, _ := connect(t, socket, "10.0.0.42:443"); code != http.StatusBadGateway {
		t.Fatalf("got %d, want 502", code)
	}
}

func write(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

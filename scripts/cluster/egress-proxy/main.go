// Command egress-proxy lets the local kube-apiserver reach webhooks (istiod's injector and
// validator) that run as processes on 127.0.0.1 while their Services have ClusterIPs.
//
// kube-apiserver calls a webhook Service at its ClusterIP. Nothing routes ClusterIPs here (there
// is no kube-proxy), and Endpoints may not hold loopback addresses. With an
// EgressSelectorConfiguration (egress "cluster", HTTPConnect over a Unix socket) the apiserver
// instead asks this proxy to CONNECT to CLUSTERIP:PORT; the proxy looks that target up in a route
// table and connects to the local address it maps to.
//
// Targets without a route are refused and never dialled: a ClusterIP is a private address that
// nothing on this machine may send traffic to. For the same reason a route may only lead to a
// loopback address.
//
// The route table is read again for every CONNECT, so a test adds a route for each istiod it
// starts simply by writing a file. -routes names a file or a directory; in a directory every
// regular file whose name does not start with "." is read (a test writes "name.tmp"-style dot
// files and renames them into place, so a half-written file is never read). Each line is
//
//	CLUSTERIP:PORT 127.0.0.1:PORT
//
// blank lines and lines starting with # are ignored. A malformed line is skipped and logged.
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"
)

func main() {
	socket := flag.String("socket", "", "Unix socket to listen on (the apiserver's transport.uds.udsName)")
	routes := flag.String("routes", "", "route table: a file, or a directory of files, of 'TARGET LOCAL' lines")
	flag.Parse()
	if *socket == "" || *routes == "" || flag.NArg() != 0 {
		fmt.Fprintln(os.Stderr, "usage: egress-proxy -socket PATH -routes FILE-OR-DIR")
		os.Exit(2)
	}
	log.SetFlags(log.LstdFlags | log.Lmicroseconds)

	// A socket file left by a crashed run would make Listen fail; only a socket is removed,
	// never a regular file that the flag names by mistake.
	if fi, err := os.Lstat(*socket); err == nil && fi.Mode()&os.ModeSocket != 0 {
		os.Remove(*socket)
	}
	ln, err := net.Listen("unix", *socket)
	if err != nil {
		log.Fatalf("listen: %v", err)
	}
	// Whoever can connect can reach the mapped local ports; keep it to this user.
	if err := os.Chmod(*socket, 0o600); err != nil {
		log.Fatalf("chmod %s: %v", *socket, err)
	}

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-sigs
		ln.Close() // also removes the socket file
	}()

	p := &proxy{routes: *routes, dial: dialLoopback}
	log.Printf("listening on %s, routes from %s", *socket, *routes)
	if err := p.serve(ln); err != nil && !errors.Is(err, net.ErrClosed) {
		log.Fatalf("serve: %v", err)
	}
}

// proxy answers HTTP CONNECT requests on a listener. dial is a field so tests can prove that a
// refused target is never dialled.
type proxy struct {
	routes string
	dial   func(addr string) (net.Conn, error)
}

func dialLoopback(addr string) (net.Conn, error) {
	return net.DialTimeout("tcp", addr, 5*time.Second)
}

func (p *proxy) serve(ln net.Listener) error {
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go p.handle(c)
	}
}

func (p *proxy) handle(client net.Conn) {
	defer client.Close()
	// The apiserver sends its CONNECT at once; a silent client must not hold a goroutine forever.
	client.SetReadDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReader(client)
	req, err := http.ReadRequest(br)
	if err != nil {
		log.Printf("bad request: %v", err)
		reply(client, http.StatusBadRequest)
		return
	}
	if req.Method != http.MethodConnect {
		log.Printf("refused %s %s: only CONNECT is served", req.Method, req.RequestURI)
		reply(client, http.StatusMethodNotAllowed)
		return
	}
	target := req.Host
	table, err := loadRoutes(p.routes)
	if err != nil {
		log.Printf("refused CONNECT %s: reading routes: %v", target, err)
		reply(client, http.StatusServiceUnavailable)
		return
	}
	local, ok := table[canonical(target)]
	if !ok {
		log.Printf("refused CONNECT %s: no route", target)
		reply(client, http.StatusForbidden)
		return
	}
	upstream, err := p.dial(local)
	if err != nil {
		log.Printf("CONNECT %s -> %s failed: %v", target, local, err)
		reply(client, http.StatusBadGateway)
		return
	}
	defer upstream.Close()
	client.SetReadDeadline(time.Time{})
	if _, err := io.WriteString(client, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
		return
	}
	log.Printf("CONNECT %s -> %s", target, local)

	var wg sync.WaitGroup
	wg.Add(2)
	// br, not client: bytes the client sent right after its request may already be buffered.
	go func() { defer wg.Done(); io.Copy(upstream, br); closeWrite(upstream) }()
	go func() { defer wg.Done(); io.Copy(client, upstream); closeWrite(client) }()
	wg.Wait()
}

// closeWrite passes a half-close on, so a peer waiting for EOF sees it.
func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	} else {
		c.Close()
	}
}

func reply(c net.Conn, code int) {
	fmt.Fprintf(c, "HTTP/1.1 %d %s\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", code, http.StatusText(code))
}

// canonical spells HOST:PORT one way, so "10.0.0.5:443" and "[::ffff:10.0.0.5]:443" or a
// differently cased name find the same route. Unparseable input is returned as it is.
func canonical(hostport string) string {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return hostport
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		return net.JoinHostPort(ip.Unmap().String(), port)
	}
	return net.JoinHostPort(strings.ToLower(host), port)
}

// loadRoutes reads the route table from a file or from every visible regular file of a
// directory (in name order; a later line for the same target wins). A missing path is an empty
// table: no istiod has registered yet.
func loadRoutes(path string) (map[string]string, error) {
	table := map[string]string{}
	fi, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		return table, nil
	}
	if err != nil {
		return nil, err
	}
	files := []string{path}
	if fi.IsDir() {
		entries, err := os.ReadDir(path)
		if err != nil {
			return nil, err
		}
		files = files[:0]
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), ".") || !e.Type().IsRegular() {
				continue
			}
			files = append(files, filepath.Join(path, e.Name()))
		}
		sort.Strings(files)
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if errors.Is(err, os.ErrNotExist) {
			continue // removed between listing and reading: that istiod is gone
		}
		if err != nil {
			return nil, err
		}
		parseRoutes(f, string(data), table)
	}
	return table, nil
}

// parseRoutes adds the lines of one file to table, skipping (and logging) malformed ones and
// any whose local side is not a loopback IP:PORT.
func parseRoutes(name, data string, table map[string]string) {
	for i, line := range strings.Split(data, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Fields(line)
		if len(fields) != 2 {
			log.Printf("%s:%d: want 'TARGET:PORT 127.0.0.1:PORT', got %q; skipped", name, i+1, line)
			continue
		}
		if _, _, err := net.SplitHostPort(fields[0]); err != nil {
			log.Printf("%s:%d: target %q: %v; skipped", name, i+1, fields[0], err)
			continue
		}
		local, err := netip.ParseAddrPort(fields[1])
		if err != nil || !local.Addr().Unmap().IsLoopback() || local.Port() == 0 {
			log.Printf("%s:%d: local side %q must be a loopback IP:PORT; skipped", name, i+1, fields[1])
			continue
		}
		table[canonical(fields[0])] = local.String()
	}
}

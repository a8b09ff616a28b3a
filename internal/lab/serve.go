package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"

	"github.com/miekg/dns"
)

// Names the lab's DNS server answers, with the internet addresses they
// resolve to.
var Names = map[string][]string{
	"www.example.net.":     {"93.184.216.34", "2606:4700::1"},
	"api.vendor.example.":  {"93.184.216.34"},
	"time.vendor.example.": {"1.1.1.1"},
	"pool.ntp.org.":        {"8.8.8.8"},
}

// Serve runs the internet host's services until ctx ends: a web server
// (port 80) and a TCP echo server (port 7) on every internet address, and a
// DNS server (port 53, UDP and TCP) on 8.8.8.8 and 1.1.1.1 answering Names.
func (l *Lab) Serve(ctx context.Context) error {
	var closers []io.Closer
	defer func() {
		for _, c := range closers {
			c.Close()
		}
	}()
	listen := func(network, addr string) (net.Listener, error) {
		ln, err := Listen(l.Internet, network, addr)
		if err == nil {
			closers = append(closers, ln)
		}
		return ln, err
	}
	for _, h := range InternetHosts {
		host := net.JoinHostPort(h, "80")
		ln, err := listen("tcp", host)
		if err != nil {
			return fmt.Errorf("lab web server %s: %w", host, err)
		}
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "hello from %s, %s\n", h, r.RemoteAddr)
		})}
		go srv.Serve(ln)
		echo, err := listen("tcp", net.JoinHostPort(h, "7"))
		if err != nil {
			return fmt.Errorf("lab echo server %s: %w", h, err)
		}
		go func() {
			for {
				c, err := echo.Accept()
				if err != nil {
					return
				}
				go func() { defer c.Close(); io.Copy(c, c) }()
			}
		}()
	}
	handler := dns.HandlerFunc(answer)
	for _, h := range []string{"8.8.8.8", "1.1.1.1"} {
		addr := net.JoinHostPort(h, "53")
		var pc net.PacketConn
		if err := Do(l.Internet, func() (err error) { pc, err = net.ListenPacket("udp", addr); return err }); err != nil {
			return fmt.Errorf("lab dns server %s: %w", addr, err)
		}
		closers = append(closers, pc)
		ln, err := listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("lab dns server %s/tcp: %w", addr, err)
		}
		udp := &dns.Server{PacketConn: pc, Handler: handler}
		tcp := &dns.Server{Listener: ln, Handler: handler}
		go udp.ActivateAndServe()
		go tcp.ActivateAndServe()
		closers = append(closers, shutdown{udp}, shutdown{tcp})
	}
	<-ctx.Done()
	if err := ctx.Err(); !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

type shutdown struct{ s *dns.Server }

func (s shutdown) Close() error { return s.s.Shutdown() }

// answer resolves Names; anything else is NXDOMAIN.
func answer(w dns.ResponseWriter, req *dns.Msg) {
	resp := new(dns.Msg)
	resp.SetReply(req)
	found := false
	for _, q := range req.Question {
		for _, a := range Names[strings.ToLower(q.Name)] {
			found = true
			ip := net.ParseIP(a)
			switch {
			case q.Qtype == dns.TypeA && ip.To4() != nil:
				resp.Answer = append(resp.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: ip})
			case q.Qtype == dns.TypeAAAA && ip.To4() == nil:
				resp.Answer = append(resp.Answer, &dns.AAAA{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeAAAA, Class: dns.ClassINET, Ttl: 60}, AAAA: ip})
			}
		}
	}
	if !found {
		resp.Rcode = dns.RcodeNameError
	}
	w.WriteMsg(resp)
}

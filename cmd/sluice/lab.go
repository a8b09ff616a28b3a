package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"

	"github.com/sluicefw/sluice/internal/lab"
)

func runLab(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := newFlagSet("lab", "up|down|run [--prefix NAME] [--config FILE]", `Build a router lab from network namespaces on this host (needs root):

  NAME-inet    the "internet": 81.0.0.1 and 2a00:1::1 on the wire, and
               93.184.216.34, 1.1.1.1, 8.8.8.8, 2606:4700::1, with a web
               server (80), an echo server (7) and DNS (53, on 1.1.1.1
               and 8.8.8.8) while "lab run" runs
  NAME-router  the router: eth0 (wan) 81.0.0.2/24, 2a00:1::2/64;
               eth1 (lan) 192.168.1.1/24, fd00:53:1::1/64
  NAME-sw      a switch between the router and the clients
  NAME-lan1    192.168.1.10, fd00:53:1::10
  NAME-lan2    192.168.1.11, fd00:53:1::11

"up" creates it, "down" removes it, "run" creates it, starts the internet's
services and runs "sluice run" in the router with the lab policy (or
--config FILE, whose devices must be eth0 and eth1, and with --state and
--ssh passed on) until interrupted, then removes it. With --ssh :22, the
lan clients reach the TUI: ip netns exec NAME-lan1 ssh 192.168.1.1. Try: ip netns exec NAME-lan1 curl http://93.184.216.34/`, stderr)
	prefix := fs.String("prefix", "sluice-lab", "namespace name prefix")
	config := fs.String("config", "", "policy for the router (default: the lab policy)")
	var runFlags []string
	fs.Func("state", "with run: the router's state directory (sluice run --state)", func(v string) error {
		runFlags = append(runFlags, "--state", v)
		return nil
	})
	fs.Func("ssh", "with run: serve SSH management in the router on this address, such as :22 (sluice run --ssh)", func(v string) error {
		runFlags = append(runFlags, "--ssh", v)
		return nil
	})
	// The action may come before or after the flags.
	action := ""
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		action, args = args[0], args[1:]
	}
	if code, done := parseFlags(fs, args); done {
		return code
	}
	if action == "" && fs.NArg() == 1 {
		action = fs.Arg(0)
	} else if action == "" || fs.NArg() != 0 {
		fs.Usage()
		return 2
	}
	l := lab.New(*prefix)
	switch action {
	case "up":
		if err := l.Up(); err != nil {
			fmt.Fprintf(stderr, "sluice lab: %v\n", err)
			return 1
		}
		fmt.Fprintf(stdout, "lab %s is up: namespaces %s %s %s %s %s\n", *prefix, l.Internet, l.Router, l.Switch, l.LAN1, l.LAN2)
		return 0
	case "down":
		l.Down()
		fmt.Fprintf(stdout, "lab %s is down\n", *prefix)
		return 0
	case "run":
		return labRun(l, *config, runFlags, stdout, stderr)
	}
	fmt.Fprintf(stderr, "sluice lab: unknown action %q; want up, down or run\n", action)
	return 2
}

func labRun(l *lab.Lab, config string, runFlags []string, stdout, stderr io.Writer) int {
	if err := l.Up(); err != nil {
		fmt.Fprintf(stderr, "sluice lab: %v\n", err)
		return 1
	}
	defer l.Down()
	if config == "" {
		f, err := os.CreateTemp("", "sluice-lab-*.yaml")
		if err != nil {
			fmt.Fprintf(stderr, "sluice lab: %v\n", err)
			return 1
		}
		defer os.Remove(f.Name())
		f.Write(lab.Policy())
		f.Close()
		config = f.Name()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		if err := l.Serve(ctx); err != nil {
			fmt.Fprintf(stderr, "sluice lab: %v\n", err)
			stop()
		}
	}()
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintf(stderr, "sluice lab: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "lab %s is up; the router runs sluice with %s. Try:\n  ip netns exec %s curl http://93.184.216.34/\n  ip netns exec %s ping -c1 2606:4700::1\nCtrl-C stops it and removes the lab.\n",
		l.Prefix, config, l.LAN1, l.LAN1)
	cmd := l.Command(l.Router, append([]string{self, "run", "--config", config}, runFlags...)...)
	cmd.Stdout, cmd.Stderr = stdout, stderr
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(stderr, "sluice lab: %v\n", err)
		return 1
	}
	go func() {
		<-ctx.Done()
		cmd.Process.Signal(syscall.SIGTERM)
	}()
	if err := cmd.Wait(); err != nil {
		if ee, ok := err.(*exec.ExitError); ok && ctx.Err() != nil && ee.ExitCode() <= 0 {
			return 0
		}
		if ctx.Err() == nil {
			fmt.Fprintf(stderr, "sluice lab: the router's sluice run ended: %v\n", err)
			return 1
		}
	}
	return 0
}

package cluster

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// probeOnce runs one probe against the pod at ip as the kubelet does: a
// TCP connect (tcpSocket) or an HTTP GET whose status is 200-399
// (httpGet), within timeoutSeconds (default 1).
func probeOnce(ctx context.Context, ip string, c corev1.Container, p *corev1.Probe) error {
	timeout := time.Second
	if p.TimeoutSeconds > 0 {
		timeout = time.Duration(p.TimeoutSeconds) * time.Second
	}
	switch {
	case p.TCPSocket != nil:
		port, err := Port(c, p.TCPSocket.Port)
		if err != nil {
			return err
		}
		d := net.Dialer{Timeout: timeout}
		conn, err := d.DialContext(ctx, "tcp", net.JoinHostPort(ip, strconv.Itoa(port)))
		if err != nil {
			return err
		}
		return conn.Close()
	case p.HTTPGet != nil:
		port, err := Port(c, p.HTTPGet.Port)
		if err != nil {
			return err
		}
		scheme, client := "http", http.DefaultClient
		if p.HTTPGet.Scheme == corev1.URISchemeHTTPS {
			// As the kubelet: no certificate verification and no client
			// certificate.
			scheme, client = "https", kubeletHTTPS
		}
		host := ip
		if p.HTTPGet.Host != "" {
			host = p.HTTPGet.Host
		}
		rctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		req, err := http.NewRequestWithContext(rctx, http.MethodGet,
			scheme+"://"+net.JoinHostPort(host, strconv.Itoa(port))+p.HTTPGet.Path, nil)
		if err != nil {
			return err
		}
		for _, h := range p.HTTPGet.HTTPHeaders {
			req.Header.Add(h.Name, h.Value)
		}
		req.Header.Set("User-Agent", "kube-probe/1.30")
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode < 200 || resp.StatusCode >= 400 {
			return fmt.Errorf("HTTP probe failed with statuscode: %d", resp.StatusCode)
		}
		return nil
	}
	return fmt.Errorf("%w: probe handler (exec, grpc)", ErrUnsupported)
}

// kubeletHTTPS is the client of HTTPS probes: like the kubelet's, it
// skips certificate verification and presents no client certificate.
var kubeletHTTPS = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}

// probeState counts one probe's consecutive results.
type probeState struct {
	p              *corev1.Probe
	next           time.Time
	succ, fail     int
	passed, failed bool // the threshold of successes or failures was reached on the last result
}

func newProbeState(p *corev1.Probe, start time.Time) *probeState {
	if p == nil {
		return nil
	}
	return &probeState{p: p, next: start.Add(time.Duration(p.InitialDelaySeconds) * time.Second)}
}

func (s *probeState) period() time.Duration {
	if s.p.PeriodSeconds > 0 {
		return time.Duration(s.p.PeriodSeconds) * time.Second
	}
	return 10 * time.Second
}

// record applies one result with the probe's thresholds (successThreshold
// default 1, failureThreshold default 3).
func (s *probeState) record(err error, now time.Time) {
	s.next = now.Add(s.period())
	succT, failT := int(s.p.SuccessThreshold), int(s.p.FailureThreshold)
	if succT <= 0 {
		succT = 1
	}
	if failT <= 0 {
		failT = 3
	}
	if err == nil {
		s.succ++
		s.fail = 0
	} else {
		s.fail++
		s.succ = 0
	}
	s.passed = s.succ >= succT
	s.failed = s.fail >= failT
}

// probe is the kubelet's prober for one incarnation of pod name: the
// startup probe until it passes (its failure restarts the container), then
// the liveness probe (likewise) and the readiness probe, which sets the
// pod's readiness. A pod without a readiness probe is ready once started.
func (c *Cluster) probe(ctx context.Context, name, ip string, ctr corev1.Container) {
	start := time.Now()
	startup := newProbeState(ctr.StartupProbe, start)
	live := newProbeState(ctr.LivenessProbe, start)
	ready := newProbeState(ctr.ReadinessProbe, start)
	started := startup == nil
	setReady := func(v bool, why string) {
		c.mu.Lock()
		p := c.pods[name]
		changed := p != nil && p.run.IP == ip && p.ready != v
		if changed {
			p.ready = v
		}
		c.mu.Unlock()
		if changed {
			what := "unready"
			if v {
				what = "ready"
			}
			c.event(name, what, why)
		}
	}
	restart := func(which string, err error) {
		c.event(name, which+"-failed", err.Error())
		// The kubelet kills the container; the controller starts it again.
		_ = c.Signal(context.Background(), name, "KILL")
	}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		now := time.Now()
		if !started {
			if now.Before(startup.next) {
				continue
			}
			err := probeOnce(ctx, ip, ctr, startup.p)
			if ctx.Err() != nil {
				return
			}
			startup.record(err, time.Now())
			if startup.passed {
				started = true
				c.event(name, "started-probe-passed", "")
				if live != nil {
					live.next = time.Now()
				}
				if ready != nil {
					ready.next = time.Now()
				}
			} else if startup.failed {
				restart("startup", err)
				return
			}
			continue
		}
		if ready == nil {
			setReady(true, "no readiness probe")
		}
		if live != nil && !now.Before(live.next) {
			err := probeOnce(ctx, ip, ctr, live.p)
			if ctx.Err() != nil {
				return
			}
			live.record(err, time.Now())
			if live.failed {
				restart("liveness", err)
				return
			}
		}
		if ready != nil && !now.Before(ready.next) {
			err := probeOnce(ctx, ip, ctr, ready.p)
			if ctx.Err() != nil {
				return
			}
			ready.record(err, time.Now())
			switch {
			case ready.passed:
				setReady(true, "")
			case ready.failed:
				setReady(false, err.Error())
			}
		}
	}
}

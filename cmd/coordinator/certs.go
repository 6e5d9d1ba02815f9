package main

import (
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/ringtrain/ringtrain/pkg/tlsconf"
)

func certsCmd() *cobra.Command {
	var dir, name string
	var hosts []string
	var valid time.Duration
	cmd := &cobra.Command{
		Use:   "certs --dir DIR",
		Short: "Create a CA and a certificate for a job's mutual TLS (ca.crt, tls.crt, tls.key; ca.key to sign more)",
		Long: `Creates a new CA and one certificate it signs, valid for both ends of every
connection, so that every process of a job can present the same files:
  coordinator --tls-cert DIR/tls.crt --tls-key DIR/tls.key --tls-ca DIR/ca.crt ...
  worker run  --tls-cert DIR/tls.crt --tls-key DIR/tls.key --tls-ca DIR/ca.crt ...
The certificate carries --server-name (default "ringtrain") as a DNS name;
peers are verified against it. In Kubernetes:
  kubectl create secret generic ringtrain-tls --from-file=DIR/ca.crt --from-file=DIR/tls.crt --from-file=DIR/tls.key
and install the chart with --set tls.enabled=true,tls.secretName=ringtrain-tls.
Keep ca.key away from the job: it only serves to sign more certificates.`,
		Example: `  coordinator certs --dir tls/
  coordinator certs --dir tls/ --host coordinator.example.org --valid 2160h`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f, err := tlsconf.Generate(dir, name, hosts, valid)
			if err != nil {
				return err
			}
			if _, err := f.Load(); err != nil {
				return err
			}
			fmt.Fprintf(os.Stdout, "wrote %s, %s, %s (and the CA key next to them)\nflags: --tls-cert %s --tls-key %s --tls-ca %s\n",
				f.CA, f.Cert, f.Key, f.Cert, f.Key, f.CA)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&dir, "dir", "", "directory for the files (created; existing files are never overwritten)")
	f.StringVar(&name, "server-name", tlsconf.DefaultServerName, "name the certificate carries and peers verify (--tls-server-name)")
	f.StringSliceVar(&hosts, "host", nil, "extra DNS names or IPs for the certificate (e.g. the coordinator's public name)")
	f.DurationVar(&valid, "valid", 365*24*time.Hour, "validity")
	_ = cmd.MarkFlagRequired("dir")
	return cmd
}

package main

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// pki holds the paths of every key, certificate and token file the bed uses. Everything is
// generated fresh by `testbed run` into <state>/pki: a test bed never reuses credentials.
type pki struct {
	dir                     string
	caCert, caKey           string
	apiserverCert, apiKey   string
	kubeletCert, kubeletKey string // the node agent's serving certificate (the apiserver verifies it)
	kubeletClientCert       string // the apiserver's client certificate towards the node agent
	kubeletClientKey        string
	saKey, saPub            string // service account token signing key pair
	tokenFile               string // --token-auth-file
	adminToken, kcmToken    string
	nodeToken               string
}

func newPKI(dir string) (*pki, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	p := &pki{
		dir:               dir,
		caCert:            filepath.Join(dir, "ca.crt"),
		caKey:             filepath.Join(dir, "ca.key"),
		apiserverCert:     filepath.Join(dir, "apiserver.crt"),
		apiKey:            filepath.Join(dir, "apiserver.key"),
		kubeletCert:       filepath.Join(dir, "kubelet.crt"),
		kubeletKey:        filepath.Join(dir, "kubelet.key"),
		kubeletClientCert: filepath.Join(dir, "apiserver-kubelet-client.crt"),
		kubeletClientKey:  filepath.Join(dir, "apiserver-kubelet-client.key"),
		saKey:             filepath.Join(dir, "sa.key"),
		saPub:             filepath.Join(dir, "sa.pub"),
		tokenFile:         filepath.Join(dir, "tokens.csv"),
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now().Add(-time.Hour)
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "flext-testbed-ca"},
		NotBefore:             now,
		NotAfter:              now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		return nil, err
	}
	ca, _ := x509.ParseCertificate(caDER)
	if err := writeCert(p.caCert, caDER); err != nil {
		return nil, err
	}
	if err := writeKey(p.caKey, caKey); err != nil {
		return nil, err
	}
	loopback := []net.IP{net.ParseIP("127.0.0.1")}
	issue := func(cert, key, cn string, org []string, dns []string, ips []net.IP, usage x509.ExtKeyUsage, serial int64) error {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return err
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial),
			Subject:      pkix.Name{CommonName: cn, Organization: org},
			NotBefore:    now,
			NotAfter:     now.Add(365 * 24 * time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
			ExtKeyUsage:  []x509.ExtKeyUsage{usage},
			DNSNames:     dns,
			IPAddresses:  ips,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, k.Public(), caKey)
		if err != nil {
			return err
		}
		if err := writeCert(cert, der); err != nil {
			return err
		}
		return writeKey(key, k)
	}
	// 10.0.0.1 is the first address of --service-cluster-ip-range: the `kubernetes` Service.
	if err := issue(p.apiserverCert, p.apiKey, "kube-apiserver", nil,
		[]string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"},
		append(loopback, net.ParseIP("10.0.0.1")), x509.ExtKeyUsageServerAuth, 2); err != nil {
		return nil, err
	}
	if err := issue(p.kubeletCert, p.kubeletKey, "flext-node-agent", nil, []string{"localhost"}, loopback, x509.ExtKeyUsageServerAuth, 3); err != nil {
		return nil, err
	}
	if err := issue(p.kubeletClientCert, p.kubeletClientKey, "kube-apiserver-kubelet-client", []string{"system:masters"}, nil, nil, x509.ExtKeyUsageClientAuth, 4); err != nil {
		return nil, err
	}
	saKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	if err := writeKey(p.saKey, saKey); err != nil {
		return nil, err
	}
	pubDER, err := x509.MarshalPKIXPublicKey(saKey.Public())
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(p.saPub, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}), 0o600); err != nil {
		return nil, err
	}
	// Static bearer tokens, one identity per component so the audit trail and RBAC tests can tell
	// them apart. All three are cluster admins (system:masters): this is a test bed.
	p.adminToken, p.kcmToken, p.nodeToken = randomToken(), randomToken(), randomToken()
	csv := fmt.Sprintf("%s,admin,admin,\"system:masters\"\n%s,system:kube-controller-manager,kcm,\"system:masters\"\n%s,system:node-agent,node-agent,\"system:masters\"\n",
		p.adminToken, p.kcmToken, p.nodeToken)
	if err := os.WriteFile(p.tokenFile, []byte(csv), 0o600); err != nil {
		return nil, err
	}
	return p, nil
}

func randomToken() string {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

func writeCert(path string, der []byte) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
}

func writeKey(path string, k crypto.Signer) error {
	der, err := x509.MarshalECPrivateKey(k.(*ecdsa.PrivateKey))
	if err != nil {
		return err
	}
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), 0o600)
}

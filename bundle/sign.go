package bundle

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/ferry-airgap/ferry/internal/atomicfile"
)

// A signed bundle carries SigFile, the Ed25519 signature (RFC 8032, pure
// Ed25519, 64 raw bytes) of the exact bytes of ferry.json. ferry.json pins
// every blob by digest and size and every image by digest; Open checks that
// index.json says exactly what ferry.json implies; so the signature covers
// everything a reader acts on. Standard tools can check it:
//
//	openssl pkeyutl -verify -pubin -inkey KEY.pub -rawin -in ferry.json -sigfile ferry.sig

// SignatureSize is the size of SigFile.
const SignatureSize = ed25519.SignatureSize

// Signer signs bundles: a crypto.Signer whose public key is Ed25519, such
// as an ed25519.PrivateKey.
type Signer = crypto.Signer

// WithSigner signs the bundle: ferry.sig is written after ferry.json and
// BUNDLE.sig (base64, one line) beside BUNDLE.sha256. The signer's public
// key must be Ed25519 (an ed25519.PrivateKey is a crypto.Signer); nil
// writes an unsigned bundle.
func WithSigner(s Signer) WriteOption {
	if k, ok := s.(ed25519.PrivateKey); ok && len(k) == 0 {
		s = nil // a nil key in a non-nil interface
	}
	return func(o *writeOptions) { o.signer = s }
}

// sign signs ferry.json's bytes and checks the result with the public key.
func sign(s Signer, record []byte) ([]byte, error) {
	pub, ok := s.Public().(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("signing bundle: only Ed25519 keys are supported, not %T", s.Public())
	}
	sig, err := s.Sign(rand.Reader, record, crypto.Hash(0))
	if err != nil {
		return nil, fmt.Errorf("signing bundle: %w", err)
	}
	if len(sig) != SignatureSize || !ed25519.Verify(pub, record, sig) {
		return nil, errors.New("signing bundle: the signer returned a signature that does not verify")
	}
	return sig, nil
}

// TrustedKey is a public key a reader accepts signatures from. Name says
// where it came from (a file name) for messages.
type TrustedKey struct {
	Name string
	Key  ed25519.PublicKey
}

// ID is the key's fingerprint: the SHA-256 of its PKIX DER encoding, as
// `openssl pkey -pubin -in KEY.pub -outform DER | sha256sum` prints it.
func (k TrustedKey) ID() string { return KeyID(k.Key) }

// KeyID returns the SHA-256 of pub's PKIX DER encoding, in hex.
func KeyID(pub ed25519.PublicKey) string {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return ""
	}
	s := sha256.Sum256(der)
	return hex.EncodeToString(s[:])
}

// Signed reports whether the bundle carries a signature.
func (r *Reader) Signed() bool { return r.sig != nil }

// Signature returns the raw signature (nil for an unsigned bundle).
func (r *Reader) Signature() []byte { return r.sig }

// RecordBytes returns ferry.json exactly as stored: the signed bytes.
func (r *Reader) RecordBytes() []byte { return r.recordRaw }

// CheckSignature checks that the bundle is signed by one of keys and
// returns that key. An unsigned bundle wraps ErrUnsigned, a signature that
// no key verifies ErrBadSignature; both name the bundle and the keys.
func (r *Reader) CheckSignature(keys []TrustedKey) (TrustedKey, error) {
	if len(keys) == 0 {
		return TrustedKey{}, errors.New("checking signature: no trusted key given")
	}
	names := make([]string, len(keys))
	for i, k := range keys {
		names[i] = k.Name
	}
	if r.sig == nil {
		return TrustedKey{}, fmt.Errorf("bundle %s: %w (it has no %s entry) but a signature by %s is required; refusing it",
			r.path, ErrUnsigned, SigFile, strings.Join(names, " or "))
	}
	for _, k := range keys {
		if len(k.Key) == ed25519.PublicKeySize && ed25519.Verify(k.Key, r.recordRaw, r.sig) {
			return k, nil
		}
	}
	return TrustedKey{}, fmt.Errorf("bundle %s: %w with %s: it was changed after signing or signed by another key; refusing it",
		r.path, ErrBadSignature, strings.Join(names, " or "))
}

// MarshalPrivateKey encodes key as PKCS#8 PEM ("PRIVATE KEY"), the form
// `openssl genpkey -algorithm ed25519` writes.
func MarshalPrivateKey(key ed25519.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// MarshalPublicKey encodes key as PKIX PEM ("PUBLIC KEY"), the form
// `openssl pkey -pubout` writes.
func MarshalPublicKey(key ed25519.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), nil
}

// ParsePrivateKey reads an Ed25519 private key in PKCS#8 PEM.
func ParsePrivateKey(data []byte) (ed25519.PrivateKey, error) {
	block, err := onePEM(data, "PRIVATE KEY")
	if err != nil {
		return nil, err
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("not a PKCS#8 private key: %w", err)
	}
	ek, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("a %s key; ferry signs with Ed25519 keys only (ferry keygen, or openssl genpkey -algorithm ed25519)", keyType(k))
	}
	return ek, nil
}

// ParsePublicKey reads an Ed25519 public key in PKIX PEM.
func ParsePublicKey(data []byte) (ed25519.PublicKey, error) {
	block, err := onePEM(data, "PUBLIC KEY")
	if err != nil {
		return nil, err
	}
	k, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("not a PKIX public key: %w", err)
	}
	ek, ok := k.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("a %s key; ferry verifies Ed25519 keys only", keyType(k))
	}
	return ek, nil
}

// LoadPrivateKey reads an Ed25519 private key from a PKCS#8 PEM file.
func LoadPrivateKey(path string) (ed25519.PrivateKey, error) {
	data, err := readFileLimited(path, 64<<10)
	if err != nil {
		return nil, fmt.Errorf("reading signing key: %w", err)
	}
	k, err := ParsePrivateKey(data)
	if err != nil {
		return nil, fmt.Errorf("signing key %s: %w", path, err)
	}
	return k, nil
}

// LoadPublicKey reads an Ed25519 public key from a PKIX PEM file; the
// result is named after the file.
func LoadPublicKey(path string) (TrustedKey, error) {
	data, err := readFileLimited(path, 64<<10)
	if err != nil {
		return TrustedKey{}, fmt.Errorf("reading trusted key: %w", err)
	}
	k, err := ParsePublicKey(data)
	if err != nil {
		return TrustedKey{}, fmt.Errorf("trusted key %s: %w", path, err)
	}
	return TrustedKey{Name: path, Key: k}, nil
}

func onePEM(data []byte, want string) (*pem.Block, error) {
	block, rest := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("no PEM block (want %q)", want)
	}
	if block.Type != want {
		return nil, fmt.Errorf("PEM block is %q, want %q", block.Type, want)
	}
	if len(strings.TrimSpace(string(rest))) != 0 {
		return nil, errors.New("trailing data after the PEM block")
	}
	return block, nil
}

func keyType(k any) string {
	s := fmt.Sprintf("%T", k)
	s = strings.TrimPrefix(s, "*")
	s, _, _ = strings.Cut(s, ".")
	return strings.ToUpper(s)
}

// writeSigSidecar writes the signature beside the bundle as one line of
// base64, or removes a stale one when sig is nil.
func writeSigSidecar(path string, sig []byte) error {
	if sig == nil {
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		return nil
	}
	return atomicfile.WriteFile(path, []byte(base64.StdEncoding.EncodeToString(sig)+"\n"), 0o644)
}

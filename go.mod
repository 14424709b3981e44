module github.com/anycloud/anycloud

go 1.26.8

require (
	go.etcd.io/bbolt v1.5.0
	go.yaml.in/yaml/v3 v3.0.6
	golang.org/x/crypto v0.58.0
)

require golang.org/x/sys v0.49.0 // indirect

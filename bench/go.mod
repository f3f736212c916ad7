module github.com/presence-sidecar/presence-sidecar/bench

go 1.26.8

require github.com/gorilla/websocket v1.5.3

require (
	github.com/presence-sidecar/presence-sidecar v0.0.0
	github.com/redis/go-redis/v9 v9.23.0
	github.com/redis/rueidis v1.0.79
)

require (
	github.com/cespare/xxhash/v2 v2.3.0 // indirect
	go.etcd.io/bbolt v1.5.0 // indirect
	go.uber.org/atomic v1.12.0 // indirect
	go.uber.org/multierr v1.10.0 // indirect
	go.uber.org/zap v1.28.0 // indirect
	golang.org/x/sys v0.48.0 // indirect
)

replace github.com/presence-sidecar/presence-sidecar => ../

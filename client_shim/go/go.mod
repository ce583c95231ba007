module github.com/coactive-ai/coactive-credd/client_shim/go

go 1.19

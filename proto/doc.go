// Package proto holds no Go code: this directory is the buf module with the
// .proto sources of the public API (colpali/v1) and of our transcription of
// the Triton protocol (inference). Its test compiles the public API with the
// oldest protoc it claims to support, 3.21 (Debian 12's), so that a client
// generating Python, Java, C++ or C# code with a stock protoc can read it.
package proto

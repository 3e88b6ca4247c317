"""What serves a request: proxying, holds, WebSocket sessions, the engine and its pipeline."""

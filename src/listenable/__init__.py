"""listenable: listen to what an audio scene classifier heard."""

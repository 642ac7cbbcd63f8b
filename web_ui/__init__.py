"""web_ui: the Streamlit dashboard for the registry (talks to it only through registry's HTTP client)."""

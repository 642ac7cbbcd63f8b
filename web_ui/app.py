"""The dashboard's router: four pages and the connection sidebar. Run with `vera ui` (or as part of `vera up`)."""

from __future__ import annotations

import streamlit as st

from web_ui import adapter, browse, compare, session, train


def sidebar() -> None:
    url, token = session.settings()
    with st.sidebar:
        st.markdown("**Registry**")
        new_url = st.text_input("URL", value=url)
        new_token = st.text_input("Token", value=token, type="password",
                                  help="Needed when the registry requires tokens; kept in this browser session only.")
        if (new_url, new_token) != (url, token):
            st.session_state["registry_url"], st.session_state["token"] = new_url.rstrip("/"), new_token
            st.cache_data.clear()
            st.session_state["browse_cursors"] = [None]
            st.rerun()
        if st.button("Refresh"):
            st.cache_data.clear()


def run() -> None:
    st.set_page_config(page_title="vera-registry", page_icon=":material/hub:", layout="wide")
    pages = {
        "browse": st.Page(session.guarded(browse.page), title="Browse", icon=":material/table_view:",
                          url_path="browse", default=True),
        "adapter": st.Page(session.guarded(adapter.page), title="Adapter", icon=":material/tune:",
                           url_path="adapter"),
        "compare": st.Page(session.guarded(compare.page), title="Compare", icon=":material/compare_arrows:",
                           url_path="compare"),
        "train": st.Page(session.guarded(train.page), title="Train", icon=":material/model_training:",
                         url_path="train"),
    }
    st.session_state["pages"] = pages
    navigation = st.navigation(list(pages.values()))
    sidebar()
    navigation.run()

//! [`Policy`]: what the sanitizer keeps, and its builder.

use url::Url;

/// How an `<iframe srcdoc>` is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SrcdocMode {
    /// The `srcdoc` document is sanitized recursively with the same policy (masks included) and
    /// re-embedded, up to [`crate::MAX_SRCDOC_NESTING`] levels deep; deeper ones are dropped.
    #[default]
    Sanitize,
    /// The `srcdoc` attribute is dropped.
    Drop,
}

/// What the sanitizer keeps. [`Policy::default()`] is the strict policy the relay uses; see the
/// crate documentation for the full list of what is always masked or removed, whatever the
/// policy says. Build other policies with [`Policy::builder`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub(crate) base_url: Option<Url>,
    pub(crate) stylesheet_links: bool,
    pub(crate) iframe_src: bool,
    pub(crate) data_images: bool,
    pub(crate) srcdoc: SrcdocMode,
    pub(crate) extra_sensitive_names: Vec<String>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            base_url: None,
            stylesheet_links: true,
            iframe_src: false,
            data_images: true,
            srcdoc: SrcdocMode::Sanitize,
            extra_sensitive_names: Vec::new(),
        }
    }
}

impl Policy {
    /// A builder starting from [`Policy::default()`].
    pub fn builder() -> PolicyBuilder {
        PolicyBuilder {
            policy: Policy::default(),
        }
    }

    /// The base URL relative URLs are resolved against, if any.
    pub fn base_url(&self) -> Option<&Url> {
        self.base_url.as_ref()
    }

    /// The same policy with another base URL (used by the relay for each snapshot's `baseUrl`).
    pub(crate) fn with_base_url(&self, base: Option<Url>) -> Policy {
        let mut p = self.clone();
        p.base_url = base;
        p
    }
}

/// Builds a [`Policy`]. Every setter documents its default, which is the value in
/// [`Policy::default()`].
///
/// ```
/// use frontdesk_cobrowse::{Policy, SrcdocMode};
/// let policy = Policy::builder()
///     .base_url(url::Url::parse("https://shop.example/cart/").unwrap())
///     .srcdoc(SrcdocMode::Drop)
///     .sensitive_name("loyaltypin")
///     .build();
/// assert!(policy.base_url().is_some());
/// ```
#[derive(Debug, Clone)]
pub struct PolicyBuilder {
    policy: Policy,
}

impl PolicyBuilder {
    /// Resolve relative URLs (in attributes and CSS `url()`) against this base; only results with
    /// an `http`/`https` scheme are kept. **Default: none**, and then every relative URL is
    /// dropped (except bare `#fragment`s): in the agent's viewer a relative URL would point at the
    /// frontdesk server itself. A base that is not `http`/`https` is ignored.
    pub fn base_url(mut self, base: Url) -> Self {
        self.policy.base_url = matches!(base.scheme(), "http" | "https").then_some(base);
        self
    }

    /// Keep `<link rel=stylesheet href=…>` (with an `http`/`https` URL). **Default: true**: the
    /// agent needs the page's CSS, and CSS cannot run script in any supported browser (the
    /// legacy vectors `expression()`, `behavior`, `-moz-binding` are stripped from inline CSS).
    /// With `false`, `<link>` keeps no attribute at all.
    pub fn stylesheet_links(mut self, keep: bool) -> Self {
        self.policy.stylesheet_links = keep;
        self
    }

    /// Keep an `http`/`https` `src` on `<iframe>` (loaded in the viewer's sandbox).
    /// **Default: false**: the iframe is kept as an empty, sandboxed box of the same size.
    pub fn iframe_src(mut self, keep: bool) -> Self {
        self.policy.iframe_src = keep;
        self
    }

    /// Keep `data:image/…` URLs (PNG, JPEG, GIF, WebP, AVIF, BMP, ICO — never SVG) where an image
    /// is loaded: `img`/`source`/`input` `src` and `srcset`, `video` `poster`, SVG `image`/
    /// `feImage` `href`, `background` and CSS `url()`. **Default: true.**
    pub fn data_images(mut self, keep: bool) -> Self {
        self.policy.data_images = keep;
        self
    }

    /// How `<iframe srcdoc>` is handled. **Default: [`SrcdocMode::Sanitize`].**
    pub fn srcdoc(mut self, mode: SrcdocMode) -> Self {
        self.policy.srcdoc = mode;
        self
    }

    /// Add a word to the name heuristics (matched like the built-in words against the tokens of
    /// `name`, `id` and `autocomplete`, see the crate docs). Only ASCII letters and digits are
    /// kept; it is matched case-insensitively. **Default: no extra word.** Masking can only be
    /// added, never removed, by a policy.
    pub fn sensitive_name(mut self, word: &str) -> Self {
        let w: String = word
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .map(|c| c.to_ascii_lowercase())
            .collect();
        if !w.is_empty() && !self.policy.extra_sensitive_names.contains(&w) {
            self.policy.extra_sensitive_names.push(w);
        }
        self
    }

    /// The policy.
    pub fn build(self) -> Policy {
        self.policy
    }
}

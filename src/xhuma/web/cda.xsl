<?xml version="1.0" encoding="UTF-8"?>
<!-- Xhuma's own rendering of a C-CDA document for a clinician (XSLT 1.0, written for Xhuma; not HL7's cda.xsl).

     The header (title, patient, author, custodian, date) and every section's narrative block (CDA R2
     NarrativeBlock.xsd: paragraph, list, table, content, caption, br, linkHtml, footnote) become plain HTML.
     Text is written with value-of only (escaped by the processor); no attribute of the document is copied except
     the numeric colspan/rowspan of table cells, so nothing in a document can add a link, a style, a script or an
     event handler. Unknown narrative elements are reduced to their text. -->
<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform" xmlns:h="urn:hl7-org:v3"
                exclude-result-prefixes="h">
  <xsl:output method="html" encoding="UTF-8" indent="no" doctype-system="about:legacy-compat"/>

  <xsl:template match="/">
    <html lang="en">
      <head>
        <meta charset="utf-8"/>
        <meta name="viewport" content="width=device-width, initial-scale=1"/>
        <meta name="referrer" content="no-referrer"/>
        <title><xsl:value-of select="h:ClinicalDocument/h:title"/></title>
        <link rel="stylesheet" href="/console/static/document.css"/>
      </head>
      <body>
        <article class="cda">
          <xsl:apply-templates select="h:ClinicalDocument"/>
        </article>
      </body>
    </html>
  </xsl:template>

  <xsl:template match="h:ClinicalDocument">
    <header class="cda-header">
      <h1><xsl:value-of select="h:title"/></h1>
      <dl>
        <xsl:for-each select="h:recordTarget/h:patientRole">
          <dt>Patient</dt>
          <dd><xsl:apply-templates select="h:patient/h:name[1]"/></dd>
          <dt>NHS number</dt>
          <dd><xsl:value-of select="h:id[@root='2.16.840.1.113883.2.1.4.1']/@extension"/></dd>
          <dt>Born</dt>
          <dd><xsl:call-template name="date"><xsl:with-param name="ts" select="h:patient/h:birthTime/@value"/></xsl:call-template></dd>
          <dt>Gender</dt>
          <dd><xsl:value-of select="h:patient/h:administrativeGenderCode/@displayName"/>
            <xsl:if test="not(h:patient/h:administrativeGenderCode/@displayName)">
              <xsl:value-of select="h:patient/h:administrativeGenderCode/@code"/>
            </xsl:if></dd>
        </xsl:for-each>
        <dt>Created</dt>
        <dd><xsl:call-template name="date"><xsl:with-param name="ts" select="h:effectiveTime/@value"/></xsl:call-template></dd>
        <xsl:for-each select="h:author[1]/h:assignedAuthor">
          <dt>Author</dt>
          <dd>
            <xsl:apply-templates select="h:assignedPerson/h:name[1]"/>
            <xsl:value-of select="h:assignedAuthoringDevice/h:softwareName"/>
            <xsl:if test="h:representedOrganization/h:name">
              <xsl:text> (</xsl:text><xsl:value-of select="h:representedOrganization/h:name"/><xsl:text>)</xsl:text>
            </xsl:if>
          </dd>
        </xsl:for-each>
        <dt>Custodian</dt>
        <dd><xsl:value-of select="h:custodian/h:assignedCustodian/h:representedCustodianOrganization/h:name"/></dd>
      </dl>
    </header>
    <nav class="cda-toc" aria-label="Sections">
      <ol>
        <xsl:for-each select="h:component/h:structuredBody/h:component/h:section">
          <li><xsl:value-of select="h:title"/></li>
        </xsl:for-each>
      </ol>
    </nav>
    <xsl:apply-templates select="h:component/h:structuredBody/h:component/h:section"/>
  </xsl:template>

  <xsl:template match="h:section">
    <section class="cda-section">
      <h2><xsl:value-of select="h:title"/></h2>
      <xsl:apply-templates select="h:text"/>
      <xsl:apply-templates select="h:component/h:section"/>
    </section>
  </xsl:template>

  <xsl:template match="h:name">
    <xsl:for-each select="h:prefix | h:given | h:family | h:suffix">
      <xsl:if test="position() &gt; 1"><xsl:text> </xsl:text></xsl:if>
      <xsl:value-of select="."/>
    </xsl:for-each>
    <xsl:if test="not(*)"><xsl:value-of select="."/></xsl:if>
  </xsl:template>

  <!-- HL7 TS YYYYMMDD[HHMM...] as YYYY-MM-DD (the time, when present, as HH:MM). -->
  <xsl:template name="date">
    <xsl:param name="ts"/>
    <xsl:value-of select="substring($ts, 1, 4)"/>
    <xsl:if test="string-length($ts) &gt;= 6">-<xsl:value-of select="substring($ts, 5, 2)"/></xsl:if>
    <xsl:if test="string-length($ts) &gt;= 8">-<xsl:value-of select="substring($ts, 7, 2)"/></xsl:if>
    <xsl:if test="string-length($ts) &gt;= 12">
      <xsl:text> </xsl:text><xsl:value-of select="substring($ts, 9, 2)"/>:<xsl:value-of select="substring($ts, 11, 2)"/>
    </xsl:if>
  </xsl:template>

  <!-- The narrative block. -->
  <xsl:template match="h:text">
    <div class="cda-text"><xsl:apply-templates/></div>
  </xsl:template>

  <xsl:template match="h:paragraph"><p><xsl:apply-templates/></p></xsl:template>
  <xsl:template match="h:br"><br/></xsl:template>
  <xsl:template match="h:caption"><strong class="caption"><xsl:apply-templates/></strong></xsl:template>
  <xsl:template match="h:footnote | h:footnoteRef"><small><xsl:apply-templates/></small></xsl:template>
  <xsl:template match="h:sub"><sub><xsl:value-of select="."/></sub></xsl:template>
  <xsl:template match="h:sup"><sup><xsl:value-of select="."/></sup></xsl:template>
  <!-- A link's text only: a document must not send the reader elsewhere. -->
  <xsl:template match="h:linkHtml | h:content"><span><xsl:call-template name="emphasis"/><xsl:apply-templates/></span></xsl:template>
  <xsl:template match="h:renderMultiMedia"><em>[multimedia not shown]</em></xsl:template>

  <xsl:template match="h:list[@listType='ordered']"><ol><xsl:apply-templates select="h:caption | h:item"/></ol></xsl:template>
  <xsl:template match="h:list"><ul><xsl:apply-templates select="h:caption | h:item"/></ul></xsl:template>
  <xsl:template match="h:item"><li><xsl:apply-templates/></li></xsl:template>

  <xsl:template match="h:table">
    <div class="table-scroll">
      <table><xsl:apply-templates select="h:caption | h:thead | h:tbody | h:tfoot | h:tr"/></table>
    </div>
  </xsl:template>
  <xsl:template match="h:table/h:caption"><caption><xsl:apply-templates/></caption></xsl:template>
  <xsl:template match="h:thead"><thead><xsl:apply-templates select="h:tr"/></thead></xsl:template>
  <xsl:template match="h:tbody"><tbody><xsl:apply-templates select="h:tr"/></tbody></xsl:template>
  <xsl:template match="h:tfoot"><tfoot><xsl:apply-templates select="h:tr"/></tfoot></xsl:template>
  <xsl:template match="h:tr"><tr><xsl:apply-templates select="h:th | h:td"/></tr></xsl:template>
  <xsl:template match="h:th"><th><xsl:call-template name="span"/><xsl:apply-templates/></th></xsl:template>
  <xsl:template match="h:td"><td><xsl:call-template name="span"/><xsl:apply-templates/></td></xsl:template>

  <!-- colspan/rowspan copied only as numbers. -->
  <xsl:template name="span">
    <xsl:if test="string(number(@colspan)) != 'NaN'"><xsl:attribute name="colspan"><xsl:value-of select="number(@colspan)"/></xsl:attribute></xsl:if>
    <xsl:if test="string(number(@rowspan)) != 'NaN'"><xsl:attribute name="rowspan"><xsl:value-of select="number(@rowspan)"/></xsl:attribute></xsl:if>
  </xsl:template>

  <!-- styleCode mapped to a fixed set of classes, never copied. -->
  <xsl:template name="emphasis">
    <xsl:choose>
      <xsl:when test="contains(@styleCode, 'Bold')"><xsl:attribute name="class">bold</xsl:attribute></xsl:when>
      <xsl:when test="contains(@styleCode, 'Italics')"><xsl:attribute name="class">italics</xsl:attribute></xsl:when>
    </xsl:choose>
  </xsl:template>

  <!-- Anything else in the narrative: its text, escaped. -->
  <xsl:template match="h:text//*" priority="-1"><xsl:apply-templates/></xsl:template>
  <xsl:template match="text()"><xsl:value-of select="."/></xsl:template>
</xsl:stylesheet>
